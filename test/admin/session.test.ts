import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { Registry } from 'prom-client';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { SessionStore, cookieValue, sessionCookie } from '../../src/admin/session.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { compilePolicy, loadPolicyFile } from '../../src/policy/index.js';
import type { PolicyHolder, PolicyState } from '../../src/policy/holder.js';
import { rec, tempDir } from '../decisions/helpers.js';

const ADMIN = 'admin-token-for-session-tests';
const VIEWER = 'viewer-token-for-session-tests';
const t = tempDir('ae-session-');
const policyFile = path.join(t.dir, 'policy.yaml');
let store: SqliteDecisionStore;
let admin: AdminServer;
let base: string;
let reloads = 0;

function holder(): PolicyHolder {
  const st: PolicyState = { policy: compilePolicy(loadPolicyFile(policyFile)), loadedAt: new Date().toISOString(), files: [policyFile], reloads: 0, reloadFailures: 0, lastError: null };
  return {
    current: () => st.policy,
    state: () => st,
    onChange: () => {},
    async reload() {
      reloads++;
      return { ok: true, hash: st.policy.hash };
    },
  };
}

interface Res {
  status: number;
  json: any;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

async function send(method: string, p: string, headers: Record<string, string> = {}, body?: unknown): Promise<Res> {
  const h: Record<string, string> = { ...headers };
  if (body !== undefined || (method !== 'GET' && !h.authorization)) h['content-type'] ??= 'application/json';
  const res = await request(base + p, { method: method as 'GET', headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, json, text, headers: res.headers };
}

async function signIn(token: string): Promise<{ cookie: string; csrf: string; res: Res }> {
  const res = await send('POST', '/api/session', {}, { token });
  expect(res.status).toBe(200);
  const set = String(res.headers['set-cookie']);
  return { cookie: set.split(';', 1)[0], csrf: res.json.csrfToken, res };
}

beforeAll(async () => {
  writeFileSync(policyFile, 'version: 1\nrules:\n  - name: llm\n    action: allow\n    hosts: [api.openai.com]\n');
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
  store.write(rec({ host: 'evil.example', verdict: 'deny', reason: 'no_rule', rule: null }));
  store.flush();
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: ADMIN, viewerToken: VIEWER, store, policy: holder(), metricsRegistry: new Registry(), ready: () => true });
  base = `http://127.0.0.1:${admin.port}`;
});
afterAll(async () => {
  await admin.close();
  await store.close();
  t.cleanup();
});

describe('dashboard sessions', () => {
  it('exchanges the admin token for an HttpOnly, SameSite=Strict, Path=/ cookie holding a random id, never the token', async () => {
    const { cookie, csrf, res } = await signIn(ADMIN);
    const set = String(res.headers['set-cookie']);
    expect(set).toMatch(/^agent_egress_session=[A-Za-z0-9_-]{43};/);
    expect(set).toMatch(/; HttpOnly/);
    expect(set).toMatch(/; SameSite=Strict/);
    expect(set).toMatch(/; Path=\//);
    expect(set).toMatch(/; Max-Age=\d+/);
    // Plain HTTP listener: a Secure cookie would never come back.
    expect(set).not.toMatch(/Secure/);
    expect(set).not.toContain(ADMIN);
    expect(res.text).not.toContain(ADMIN);
    expect(res.json).toMatchObject({ role: 'admin', csrfToken: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    expect(res.headers['cache-control']).toBe('no-store');
    const again = await signIn(ADMIN);
    expect(again.cookie).not.toBe(cookie);
    expect(again.csrf).not.toBe(csrf);
    const list = await send('GET', '/api/decisions', { cookie });
    expect(list.status).toBe(200);
    expect(list.json.records[0].host).toBe('evil.example');
    const me = await send('GET', '/api/session', { cookie });
    expect(me.json).toEqual({ role: 'admin', via: 'cookie', csrfToken: csrf, expiresAt: expect.any(String), open: false });
  });

  it('the Secure flag is set when the session is made over TLS', () => {
    const s = new SessionStore().create('admin');
    expect(sessionCookie(s, true)).toMatch(/; Secure$/);
    expect(sessionCookie(s, false)).not.toMatch(/Secure/);
  });

  it('refuses a wrong token with 401, and too many wrong tokens from one address with 429', async () => {
    const s = await startAdminServer({ listen: '127.0.0.1:0', token: ADMIN, store, policy: holder(), metricsRegistry: new Registry(), ready: () => true });
    try {
      const at = `http://127.0.0.1:${s.port}/api/session`;
      const tryToken = async (token: string) => {
        const r = await request(at, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
        await r.body.dump();
        return r;
      };
      for (let i = 0; i < 10; i++) expect((await tryToken(`wrong-${i}`)).statusCode).toBe(401);
      const limited = await tryToken(ADMIN);
      expect(limited.statusCode).toBe(429);
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
    expect((await send('POST', '/api/session', {}, { token: '' })).status).toBe(400);
    expect((await send('POST', '/api/session', {}, { token: ADMIN, extra: 1 })).status).toBe(400);
    // A form post (no preflight) never reaches the route.
    expect((await send('POST', '/api/session', { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415);
  });

  it('a state-changing request with the cookie needs the CSRF token; with a Bearer header it does not', async () => {
    const { cookie, csrf } = await signIn(ADMIN);
    const before = reloads;
    const none = await send('POST', '/api/policy/reload', { cookie });
    expect(none.status).toBe(403);
    expect(none.json.message).toMatch(/CSRF/);
    expect((await send('POST', '/api/policy/reload', { cookie, 'x-csrf-token': 'x'.repeat(43) })).status).toBe(403);
    const other = await signIn(ADMIN);
    expect((await send('POST', '/api/policy/reload', { cookie, 'x-csrf-token': other.csrf })).status).toBe(403);
    expect(reloads).toBe(before);
    expect((await send('POST', '/api/policy/reload', { cookie, 'x-csrf-token': csrf })).status).toBe(200);
    expect((await send('POST', '/api/policy/reload', { authorization: `Bearer ${ADMIN}` })).status).toBe(200);
    expect(reloads).toBe(before + 2);
  });

  it('a viewer reads everything and changes nothing (403), by cookie or by Bearer', async () => {
    const { cookie, csrf, res } = await signIn(VIEWER);
    expect(res.json.role).toBe('viewer');
    const before = reloads;
    for (const h of [{ cookie }, { authorization: `Bearer ${VIEWER}` }]) {
      for (const p of ['/api/decisions', '/api/decisions/summary', '/api/policy', '/api/decisions/timeline', '/api/alerts']) expect((await send('GET', p, h)).status, p).toBe(200);
    }
    const byCookie = await send('POST', '/api/policy/reload', { cookie, 'x-csrf-token': csrf });
    expect(byCookie.status).toBe(403);
    expect(byCookie.json.message).toMatch(/read-only/);
    expect((await send('POST', '/api/policy/reload', { authorization: `Bearer ${VIEWER}` })).status).toBe(403);
    // The approval routes are state-changing too: refused before any route runs.
    expect((await send('POST', '/api/approvals/x/approve', { authorization: `Bearer ${VIEWER}` }, { scope: 'once' })).status).toBe(403);
    expect((await send('POST', '/api/grants/x/revoke', { cookie, 'x-csrf-token': csrf }, {})).status).toBe(403);
    expect(reloads).toBe(before);
    expect((await send('GET', '/api/session', { cookie })).json.role).toBe('viewer');
  });

  it('signs out: the cookie is cleared and the session is gone server-side', async () => {
    const { cookie, csrf } = await signIn(ADMIN);
    expect((await send('DELETE', '/api/session', { cookie })).status).toBe(403); // CSRF applies to sign-out too
    const out = await send('DELETE', '/api/session', { cookie, 'x-csrf-token': csrf });
    expect(out.status).toBe(200);
    expect(String(out.headers['set-cookie'])).toMatch(/^agent_egress_session=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0/);
    expect((await send('GET', '/api/decisions', { cookie })).status).toBe(401);
    const viewer = await signIn(VIEWER);
    expect((await send('DELETE', '/api/session', { cookie: viewer.cookie, 'x-csrf-token': viewer.csrf })).status).toBe(200);
  });

  it('an unknown, forged or doubled cookie is 401; a wrong Bearer header never falls back to the cookie', async () => {
    const { cookie } = await signIn(ADMIN);
    expect((await send('GET', '/api/decisions', { cookie: 'agent_egress_session=forged' })).status).toBe(401);
    expect((await send('GET', '/api/decisions', { cookie: `${cookie}; agent_egress_session=other` })).status).toBe(401);
    expect((await send('GET', '/api/decisions', { cookie, authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await send('GET', '/api/decisions', { cookie: `theme=dark; ${cookie}` })).status).toBe(200);
  });

  it('refuses a viewer token without an admin token, or equal to it', async () => {
    const deps = { store, policy: holder(), metricsRegistry: new Registry(), ready: () => true };
    await expect(startAdminServer({ listen: '127.0.0.1:0', open: true, viewerToken: VIEWER, ...deps })).rejects.toThrow(/viewer token needs an admin token/);
    await expect(startAdminServer({ listen: '127.0.0.1:0', token: ADMIN, viewerToken: ADMIN, ...deps })).rejects.toThrow(/must differ/);
  });

  it('--no-admin-auth: the page is admin without signing in', async () => {
    const s = await startAdminServer({ listen: '127.0.0.1:0', open: true, store, policy: holder(), metricsRegistry: new Registry(), ready: () => true });
    try {
      const r = await request(`http://127.0.0.1:${s.port}/api/session`);
      expect(await r.body.json()).toMatchObject({ role: 'admin', via: 'open', open: true });
    } finally {
      await s.close();
    }
  });
});

describe('SessionStore', () => {
  it('ends a session at its absolute expiry and after the idle time, and bounds how many it keeps', () => {
    let now = 1_000_000;
    const s = new SessionStore({ ttlMs: 10_000, idleMs: 4_000, max: 3, now: () => now });
    const a = s.create('admin');
    now += 3_000;
    expect(s.get(a.id)?.role).toBe('admin');
    now += 3_000;
    expect(s.get(a.id)?.role).toBe('admin'); // used 3 s ago: not idle
    now += 4_000;
    expect(s.get(a.id)).toBeNull(); // idle 4 s
    const b = s.create('viewer');
    for (let i = 0; i < 3; i++) {
      now += 3_000;
      s.get(b.id);
    }
    now += 1_000;
    expect(s.get(b.id)).toBeNull(); // 10 s after creation, used all along
    const ids = [s.create('admin'), s.create('admin'), s.create('admin'), s.create('admin')].map((x) => x.id);
    expect(s.size).toBe(3);
    expect(s.get(ids[0])).toBeNull();
    expect(s.get(ids[3])?.role).toBe('admin');
    expect(s.get(undefined)).toBeNull();
    expect(s.get('x'.repeat(500))).toBeNull();
  });

  it('reads one cookie, and refuses an ambiguous header', () => {
    expect(cookieValue('a=1; agent_egress_session=abc; b=2', 'agent_egress_session')).toBe('abc');
    expect(cookieValue('agent_egress_session=abc; agent_egress_session=def', 'agent_egress_session')).toBeUndefined();
    expect(cookieValue('xagent_egress_session=abc', 'agent_egress_session')).toBeUndefined();
    expect(cookieValue(undefined, 'agent_egress_session')).toBeUndefined();
  });
});
