import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { rec, tempDir } from '../decisions/helpers.js';

/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core (no browser download),
 * against the real proxy, store, DNS filter and admin API. Waits are generous and nothing is timed:
 * the CI machine has two loaded cores.
 */
const ADMIN = 'admin-token-for-the-browser-test';
const VIEWER = 'viewer-token-for-the-browser-test';
const WAIT = { timeout: 30_000 };
const ARTIFACTS = path.resolve('test-artifacts/dashboard');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const XSS_NAME = '<img src=x onerror=window.__xss=1>.example';

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let admin: string;
let dnsPort: number;
const store = tempDir('ae-dash-browser-');
const profiles: string[] = [];
const contexts: BrowserContext[] = [];
const pageErrors: string[] = [];

async function browser(): Promise<{ ctx: BrowserContext; page: Page }> {
  // A fresh profile per context: no cookies or cache from another run.
  const dir = mkdtempSync(path.join(tmpdir(), 'ae-chromium-'));
  profiles.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 900 } });
  ctx.setDefaultTimeout(30_000);
  contexts.push(ctx);
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  // Script errors and CSP refusals would mean a view silently broke.
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
  });
  return { ctx, page };
}

/** curl through the proxy in the background: it blocks while the proxy holds the request. */
function heldCurl(url: string): { done: Promise<string> } {
  const child = spawn('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '50', '-x', proxy.url, url], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return { done: new Promise((resolve) => child.once('close', () => resolve(out))) };
}

function curl(url: string, timeoutS = 20): Promise<string> {
  return new Promise((resolve) => {
    execFile('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', String(timeoutS), '-x', proxy.url, url], (_err, stdout) => resolve(String(stdout)));
  });
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.goto(admin);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who').filter({ hasText: 'signed in' }).waitFor(WAIT);
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** The host column's cells showing exactly this host (the rule column may name it too). */
const hostCell = (page: Page, host: string) => page.locator('#rows td:nth-child(5)').filter({ hasText: new RegExp(`^${host.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) });

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const local = { A: ['127.0.0.1'] };
  dns = await startTestDnsServer({ 'allowed.test': local, 'denied.test': local, 'later.test': local, 'ask.test': local, 'ask2.test': local, 'ask3.test': local });
  origin = await startHttpOrigin();
  const policyFile = path.join(store.dir, 'policy.yaml');
  writeFileSync(
    policyFile,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: test-origins
    action: allow
    hosts: [allowed.test, later.test]
    ports: [${origin.port}]
  - name: blocked
    action: deny
    hosts: [denied.test]
  - name: ask-first
    action: ask
    hosts: ["ask*.test"]
    ports: [${origin.port}]
`,
  );
  proxy = await startTestProxy({
    policyFile,
    flags: { allow: [], deny: [], allowAddress: [] },
    dnsServers: [`127.0.0.1:${dns.port}`],
    store: { dataDir: store.dir },
    admin: { listen: '127.0.0.1:0', token: ADMIN, viewerToken: VIEWER },
    dns: { listen: ['127.0.0.1:0'], rateLimit: null },
    alerts: { threshold: 5, windowMs: 60_000, multiplier: 1 },
  });
  admin = proxy.admin!.url;
  dnsPort = proxy.egress.dns!.listeners[0].port;
  // An hour of history for the overview, through the same sink as the proxy's own records (so the
  // spike detector sees the burst and raises a real alert).
  const now = Date.now();
  for (let i = 0; i < 120; i++) {
    const t = new Date(now - 3_600_000 + i * 30_000).toISOString();
    proxy.egress.sink.write(rec({ time: t, agent: i % 3 ? 'coder' : 'researcher', host: i % 4 ? 'api.openai.com' : 'pypi.org', rule: 'llm' }));
    if (i % 5 === 0) proxy.egress.sink.write(rec({ time: t, agent: 'coder', host: `cdn${i}.tracker.example`, verdict: 'deny', reason: 'no_rule', rule: null }));
  }
  for (let i = 0; i < 8; i++) {
    const t = new Date(now - 900_000 + i * 1000).toISOString();
    proxy.egress.sink.write(rec({ time: t, agent: 'researcher', host: `x${i}.paste.example`, verdict: 'deny', reason: 'no_rule', rule: null }));
  }
}, 60_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await proxy?.close();
  await origin?.close();
  await dns?.close();
  for (const d of profiles) rmSync(d, { recursive: true, force: true });
  store.cleanup();
}, 60_000);

describe('dashboard in chromium', { timeout: 180_000 }, () => {
  let page: Page;
  let ctx: BrowserContext;

  it('signs in with the token into an HttpOnly, SameSite=Strict cookie; the token is in no URL and no storage', async () => {
    ({ ctx, page } = await browser());
    await page.goto(admin);
    await page.getByLabel('Token').waitFor(WAIT);
    await shot(page, 'sign-in');
    await page.getByLabel('Token').fill('not-the-token-at-all');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong token' }).waitFor(WAIT);
    await signIn(page, ADMIN);
    const cookies = await ctx.cookies(admin);
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ name: 'agent_egress_session', httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(cookies[0].value).not.toContain(ADMIN);
    expect(page.url()).not.toContain(ADMIN);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    expect(stored).not.toContain(ADMIN);
    expect(await page.evaluate(() => document.cookie)).toBe(''); // HttpOnly: scripts cannot read it
    expect(await page.getByLabel('Token').inputValue()).toBe('');
  });

  it('shows a denied request as it happens, without reloading', async () => {
    await page.evaluate(() => ((window as any).__sameDocument = true));
    expect(await curl(`http://denied.test:${origin.port}/`)).toBe('403');
    await hostCell(page, 'denied.test').first().waitFor(WAIT);
    const row = page.locator('#rows tr', { hasText: 'denied.test' }).first();
    expect(await row.locator('td').nth(1).textContent()).toBe('deny');
    expect(await row.locator('td').nth(6).textContent()).toBe('rule_deny');
    expect(await row.locator('td').nth(7).textContent()).toBe('blocked');
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
    expect(await curl(`http://allowed.test:${origin.port}/`)).toBe('200');
    await hostCell(page, 'allowed.test').first().waitFor(WAIT);
    await shot(page, 'live');
  });

  it('pauses and resumes the stream', async () => {
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.getByRole('button', { name: 'Resume' }).waitFor(WAIT);
    expect(await curl(`http://later.test:${origin.port}/`)).toBe('200');
    await page.locator('#live-status').filter({ hasText: '1 new decision(s) waiting' }).waitFor(WAIT);
    expect(await hostCell(page, 'later.test').count()).toBe(0);
    await page.getByRole('button', { name: 'Resume' }).click();
    await hostCell(page, 'later.test').first().waitFor(WAIT);
    await page.getByRole('button', { name: 'Pause' }).waitFor(WAIT);
  });

  it('filters through the query API and the stream', async () => {
    await page.getByLabel('Host glob').fill('*.test');
    await page.getByLabel('Decision', { exact: true }).selectOption('deny');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator('#live-status').filter({ hasText: /^1 decisions/ }).waitFor(WAIT);
    expect(await page.locator('#rows tr').count()).toBe(1);
    expect(await hostCell(page, 'denied.test').count()).toBe(1);
    // A new allowed request does not match the filtered stream; a denied one does.
    expect(await curl(`http://allowed.test:${origin.port}/again`)).toBe('200');
    expect(await curl(`http://denied.test:${origin.port}/again`)).toBe('403');
    await page.locator('#rows tr', { hasText: 'denied.test' }).nth(1).waitFor(WAIT);
    expect(await hostCell(page, 'allowed.test').count()).toBe(0);
    await page.getByLabel('Method').fill('GET');
    await page.getByLabel('Reason').selectOption('no_rule');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator('#live-status').filter({ hasText: /^0 decisions/ }).waitFor(WAIT);
    // A time range that ends is history: the stream is not followed.
    await page.getByLabel('Method').fill('');
    await page.getByLabel('Reason').selectOption('');
    await page.getByLabel('Since').fill('1h');
    await page.getByLabel('Until').fill(new Date(Date.now() + 3_600_000).toISOString().slice(0, 19) + 'Z');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator('#live-status').filter({ hasText: /^2 decisions up to .* \(not following live decisions\)$/ }).waitFor(WAIT);
    expect(await curl(`http://denied.test:${origin.port}/third`)).toBe('403');
    // Once the store has it, a followed stream (woken by the commit, else polled every second) sends it at once.
    for (let found = false; !found; ) {
      const r = await fetch(`${admin}/api/decisions?path=/third`, { headers: { authorization: `Bearer ${ADMIN}` } });
      found = ((await r.json()) as { records: unknown[] }).records.length === 1;
      if (!found) await new Promise((res) => setTimeout(res, 100));
    }
    await new Promise((r) => setTimeout(r, 2000));
    expect(await page.locator('#rows tr').count()).toBe(2);
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.locator('#live-status').filter({ hasText: /^100 decisions/ }).waitFor(WAIT);
    // Paging back through the store.
    await page.getByRole('button', { name: 'Older decisions' }).click();
    await page.locator('#live-status').filter({ hasText: /^\d+ decisions shown/ }).waitFor(WAIT);
    expect(await page.locator('#rows tr').count()).toBeGreaterThan(100);
  });

  it("opens a record's detail: every field, the rule, its place in the hash chain, a rule to paste", async () => {
    await page.getByLabel('Host glob').fill('denied.test');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator('#live-status').filter({ hasText: /^3 decisions/ }).waitFor(WAIT);
    await page.locator('#rows tr').first().click();
    const detail = page.locator('#detail');
    await detail.waitFor({ state: 'visible', ...WAIT });
    const fields = await page.locator('#detail-fields dt').allTextContents();
    for (const f of ['id', 'time', 'agent', 'client', 'method', 'host', 'port', 'verdict', 'reason', 'rule', 'policyHash']) expect(fields).toContain(f);
    expect(await page.locator('#detail-rule').textContent()).toContain('"action": "deny"');
    expect(await page.locator('#detail-chain dt').allTextContents()).toEqual(['seq', 'hash', 'prev']);
    expect(await page.locator('#detail-chain dd').nth(1).textContent()).toMatch(/^[0-9a-f]{64}$/);
    // A block to paste: real line breaks, not escapes.
    expect(await page.locator('#detail-deny').textContent()).toContain('- name: deny-denied.test\n  action: deny\n  hosts:\n    - denied.test');
    await shot(page, 'detail');
    await page.locator('#detail-deny').scrollIntoViewIfNeeded();
    await shot(page, 'detail-chain');
    await page.getByRole('button', { name: 'Close detail' }).click();
    await page.getByRole('button', { name: 'Clear' }).click();
  });

  it('renders a recorded host with markup in it as text', async () => {
    // The filtering resolver records a query name as sent: any bytes, markup included.
    await new Promise<void>((resolve) => execFile('dig', ['+tries=1', '+time=3', '-p', String(dnsPort), '@127.0.0.1', XSS_NAME.replaceAll(' ', '\\032'), 'A'], () => resolve()));
    const cell = hostCell(page, XSS_NAME).first();
    await cell.waitFor(WAIT);
    expect(await cell.textContent()).toBe(XSS_NAME);
    expect(await page.locator('#rows img').count()).toBe(0);
    await cell.click();
    await page.locator('#detail-fields dd', { hasText: XSS_NAME }).first().waitFor(WAIT);
    expect(await page.locator('#detail img').count()).toBe(0);
    expect(await page.evaluate(() => (window as any).__xss)).toBeUndefined();
    await page.getByRole('button', { name: 'Close detail' }).click();
  });

  it('shows the overview: totals, the chart with the threshold and a spike alert, top domains, agents, reasons', async () => {
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.locator('#chart svg rect').first().waitFor(WAIT);
    expect(await page.locator('#chart line.thr').count()).toBe(1);
    // A mark is a zero-width line: attached, never "visible" to playwright.
    await page.locator('#chart line.alert').first().waitFor({ state: 'attached', ...WAIT });
    expect(await page.locator('#top-domains td', { hasText: 'tracker.example' }).count()).toBe(1);
    expect(await page.locator('#top-agents td', { hasText: 'coder' }).count()).toBe(1);
    expect(await page.locator('#reasons td', { hasText: 'no_rule' }).count()).toBe(1);
    expect(await page.locator('#alerts td', { hasText: 'researcher' }).count()).toBeGreaterThan(0);
    await shot(page, 'overview');
  });

  it('shows the policy in force, its hash and the last reload', async () => {
    await page.getByRole('link', { name: 'Policy' }).click();
    const hash = proxy.egress.holder.current().hash;
    await page.locator('#policy-facts dd', { hasText: hash }).waitFor(WAIT);
    await page.getByRole('button', { name: 'Reload policy' }).click();
    await page.locator('#reload-status').filter({ hasText: 'reloaded' }).waitFor(WAIT);
    await page.locator('#policy-facts dd').nth(4).filter({ hasText: '1' }).waitFor(WAIT);
    expect(await page.locator('#policy-error').textContent()).toBe('none');
    await shot(page, 'policy');
  });

  it('approves a held request once and the client completes; denies another; grants for an hour and revokes', async () => {
    await page.getByRole('link', { name: 'Approvals' }).click();
    await page.locator('#pending td', { hasText: 'nothing is waiting' }).waitFor(WAIT);
    const held = heldCurl(`http://ask.test:${origin.port}/echo`);
    const row = page.locator('#pending tr', { hasText: `ask.test:${origin.port}` });
    await row.waitFor(WAIT);
    expect(await row.locator('td').nth(2).textContent()).toBe('GET');
    await page.locator('#pending-count').filter({ hasText: '1' }).waitFor(WAIT);
    await shot(page, 'approvals');
    await row.getByRole('combobox').selectOption('once');
    await row.getByRole('button', { name: 'Approve' }).click();
    expect(await held.done).toBe('200');
    await page.locator('#pending td', { hasText: 'nothing is waiting' }).waitFor(WAIT);
    // Once means once: the next one is held again, and this time denied.
    const again = heldCurl(`http://ask.test:${origin.port}/`);
    await row.waitFor(WAIT);
    await row.getByRole('button', { name: 'Deny' }).click();
    expect(await again.done).toBe('403');
    // An hour for everyone: a grant, listed with its expiry, that the next request uses without asking.
    const timed = heldCurl(`http://ask2.test:${origin.port}/`);
    const row2 = page.locator('#pending tr', { hasText: `ask2.test:${origin.port}` });
    await row2.waitFor(WAIT);
    expect(await row2.getByRole('combobox').locator('option').allTextContents()).not.toContain('this agent, 1 hour'); // anonymous client
    await row2.getByRole('combobox').selectOption('everyone-1h');
    await row2.getByRole('button', { name: 'Approve' }).click();
    expect(await timed.done).toBe('200');
    const grant = page.locator('#grants tr', { hasText: `ask2.test:${origin.port}` });
    await grant.waitFor(WAIT);
    expect(await grant.locator('td').nth(3).textContent()).toBe('dashboard');
    expect(await curl(`http://ask2.test:${origin.port}/`)).toBe('200');
    await shot(page, 'approvals-grant');
    await grant.getByRole('button', { name: 'Revoke' }).click();
    await page.locator('#grants td', { hasText: 'no active grants' }).waitFor(WAIT);
    // The decisions are in the log: approved with who and the scope, and the denial.
    const approved = await proxy.sink.waitFor((r) => r.host === 'ask.test' && r.reason === 'approved', 30_000);
    expect(approved.status).toBe(200);
    await proxy.sink.waitFor((r) => r.host === 'ask.test' && r.reason === 'approval_denied', 30_000);
  });

  it('signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Token').waitFor(WAIT);
    expect(await ctx.cookies(admin)).toHaveLength(0);
    await page.reload();
    await page.getByRole('button', { name: 'Sign in' }).waitFor(WAIT);
    expect(pageErrors).toEqual([]);
  });

  it('a viewer sees everything and cannot reload, approve, deny or revoke', async () => {
    const v = await browser();
    await signIn(v.page, VIEWER);
    expect(await v.page.locator('#who').textContent()).toContain('viewer');
    await hostCell(v.page, 'denied.test').first().waitFor(WAIT);
    await v.page.getByRole('link', { name: 'Policy' }).click();
    await v.page.locator('#policy-facts dd').first().waitFor(WAIT);
    expect(await v.page.getByRole('button', { name: 'Reload policy' }).isVisible()).toBe(false);
    // Even a hand-made request from the page with the session's CSRF token is refused.
    const status = await v.page.evaluate(async () => {
      const s = await (await fetch('/api/session')).json();
      const r = await fetch('/api/policy/reload', { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrfToken } });
      return r.status;
    });
    expect(status).toBe(403);
    const held = heldCurl(`http://ask3.test:${origin.port}/`);
    await v.page.getByRole('link', { name: 'Approvals' }).click();
    const row = v.page.locator('#pending tr', { hasText: `ask3.test:${origin.port}` });
    await row.waitFor(WAIT);
    expect(await row.locator('td').last().textContent()).toBe('read-only');
    expect(await v.page.getByRole('button', { name: 'Approve' }).count()).toBe(0);
    expect(await v.page.getByRole('button', { name: 'Deny' }).count()).toBe(0);
    await shot(v.page, 'viewer-approvals');
    const id = await row.getAttribute('data-id');
    const tried = await v.page.evaluate(async (approval) => {
      const s = await (await fetch('/api/session')).json();
      const r = await fetch(`/api/approvals/${approval}/approve`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrfToken }, body: '{"scope":"once"}' });
      return r.status;
    }, id);
    expect(tried).toBe(403);
    // Still held: the admin's Bearer API decides it.
    const res = await fetch(`${admin}/api/approvals/${id}/deny`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(200);
    expect(await held.done).toBe('403');
  });
});

