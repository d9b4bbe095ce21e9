import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { rawExchange } from '../helpers/raw.js';

// Issue 9 item 9: a policy file written in two steps is never loaded half-way. The real `serve`
// process, a real origin, real requests through the proxy throughout the write.
const BIN = join(resolve(__dirname, '../..'), 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-settle-'));
const policyFile = join(dir, 'policy.yaml');
let origin: Origin;
let child: ChildProcess;
let proxyPort: number;
let adminPort: number;

const start = 'version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: other\n    action: allow\n    hosts: [a.example]\n';
// The first half on its own is a valid policy that allows the origin; the whole one denies it.
const firstHalf = () =>
  `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: origin\n    action: allow\n    cidrs: [127.0.0.1/32]\n    ports: [${origin.port}]\n`;
const secondHalf = '  - name: block-origin\n    action: deny\n    cidrs: [127.0.0.1/32]\n';

async function statusThroughProxy(): Promise<number> {
  const res = await rawExchange(proxyPort, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(res)?.[1] ?? 0);
}

/** The token serve generated into its data dir (the admin API requires one on loopback too). */
const auth = () => ({ authorization: `Bearer ${readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim()}` });

async function policy(): Promise<{ hash: string; reloads: number; policy: { rules: { name: string }[] } }> {
  const res = await request(`http://127.0.0.1:${adminPort}/api/policy`, { headers: auth() });
  if (res.statusCode !== 200) throw new Error(`/api/policy answered ${res.statusCode}`);
  return (await res.body.json()) as any;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  origin = await startHttpOrigin();
  writeFileSync(policyFile, start);
  child = spawn(
    'node',
    [BIN, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--policy', policyFile, '--policy-poll', '100ms', '--policy-settle', '2s', '--admin-host', 'egress-admin.test', '--no-decision-log', '--log-format', 'json'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`serve did not start: ${err}`)), 15_000);
    child.stderr!.on('data', (d) => {
      err += d;
      const line = err.split('\n').find((l) => l.includes('agent-egress proxy listening'));
      if (line) {
        clearTimeout(timer);
        const j = JSON.parse(line);
        proxyPort = Number(String(j.listen).split(':').pop());
        adminPort = Number(String(j.admin).split(':').pop());
        ok();
      }
    });
    child.once('exit', () => fail(new Error(`serve exited: ${err}`)));
  });
});

afterAll(async () => {
  child?.kill('SIGTERM');
  await origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('policy file settle time', () => {
  it('keeps denying while the file is written in two steps, then enforces the whole new policy', async () => {
    expect(await statusThroughProxy()).toBe(403);
    const before = await policy();
    const seen: number[] = [];
    // Step one, then a pause shorter than the settle time, polling the denied host all along.
    writeFileSync(policyFile, firstHalf());
    const pauseEnd = Date.now() + 1_200;
    while (Date.now() < pauseEnd) {
      seen.push(await statusThroughProxy());
      await sleep(50);
    }
    appendFileSync(policyFile, secondHalf);
    let after = await policy();
    const deadline = Date.now() + 15_000;
    while (after.hash === before.hash && Date.now() < deadline) {
      seen.push(await statusThroughProxy());
      await sleep(50);
      after = await policy();
    }
    seen.push(await statusThroughProxy());
    expect(seen.length).toBeGreaterThan(10);
    expect(seen.filter((s) => s !== 403)).toEqual([]);
    // Exactly one reload, straight to the whole file: the half was never in force.
    expect(after.reloads).toBe(before.reloads + 1);
    expect(after.policy.rules.map((r) => r.name)).toEqual(['origin', 'block-origin']);
  });

  it('an API reload during a two-step write waits for the file to settle and loads the whole file', async () => {
    writeFileSync(policyFile, start);
    let p = await policy();
    const deadline = Date.now() + 15_000;
    while (p.policy.rules.map((r) => r.name).join() !== 'other' && Date.now() < deadline) {
      await sleep(100);
      p = await policy();
    }
    writeFileSync(policyFile, firstHalf());
    const reload = request(`http://127.0.0.1:${adminPort}/api/policy/reload`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth() } });
    await sleep(700);
    expect(await statusThroughProxy()).toBe(403);
    appendFileSync(policyFile, secondHalf);
    const res = await reload;
    const body = (await res.body.json()) as { ok: boolean; hash: string };
    expect(res.statusCode).toBe(200);
    expect(body.ok).toBe(true);
    const now = await policy();
    expect(now.hash).toBe(body.hash);
    expect(now.policy.rules.map((r) => r.name)).toEqual(['origin', 'block-origin']);
    expect(await statusThroughProxy()).toBe(403);
  });
});

describe('serve --admin-host', () => {
  const get = (host: string) =>
    new Promise<number>((ok, fail) => {
      const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/healthz', headers: { host }, setHost: false }, (res) => {
        res.resume();
        ok(res.statusCode ?? 0);
      });
      req.on('error', fail);
    });
  it('answers the configured name and refuses others with 421', async () => {
    expect(await get(`egress-admin.test:${adminPort}`)).toBe(200);
    expect(await get(`other.test:${adminPort}`)).toBe(421);
  });
});
