import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { Registry } from 'prom-client';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { DecisionMetrics } from '../../src/decisions/metrics.js';
import { compilePolicy, loadPolicyFile } from '../../src/policy/index.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import type { PolicyHolder, PolicyState } from '../../src/policy/holder.js';
import { rec, tempDir } from '../decisions/helpers.js';

/** A real holder over a real file (the production one with file watching lives with the proxy). */
function fileHolder(file: string): PolicyHolder {
  let st: PolicyState = { policy: compilePolicy(loadPolicyFile(file)), loadedAt: new Date().toISOString(), files: [file], reloads: 0, reloadFailures: 0, lastError: null };
  return {
    current: () => st.policy,
    state: () => st,
    onChange: () => {},
    async reload() {
      try {
        const p: CompiledPolicy = compilePolicy(loadPolicyFile(file));
        st = { ...st, policy: p, loadedAt: new Date().toISOString(), reloads: st.reloads + 1, lastError: null };
        return { ok: true, hash: p.hash };
      } catch (err) {
        st = { ...st, reloadFailures: st.reloadFailures + 1, lastError: { time: new Date().toISOString(), message: (err as Error).message } };
        return { ok: false, error: (err as Error).message };
      }
    },
  };
}

const TOKEN = 's3cret-token-for-tests';
const t = tempDir('ae-admin-');
const policyFile = path.join(t.dir, 'policy.yaml');
let store: SqliteDecisionStore;
let admin: AdminServer;
let base: string;
let ready = false;
const auth = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  writeFileSync(policyFile, 'version: 1\nrules:\n  - name: llm\n    action: allow\n    hosts: [api.openai.com]\n');
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
  const registry = new Registry();
  const metrics = new DecisionMetrics({ registry, storeStats: () => store.stats() });
  const holder = fileHolder(policyFile);
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: TOKEN, store, policy: holder, metricsRegistry: registry, ready: () => ready, streamPollMs: 50 });
  base = `http://127.0.0.1:${admin.port}`;
  const recs = [
    rec({ agent: 'a', host: 'api.openai.com' }),
    rec({ agent: 'b', host: 'evil.example', verdict: 'deny', reason: 'no_rule', rule: null }),
    rec({ agent: 'b', host: 'evil.example', verdict: 'deny', reason: 'no_rule', rule: null }),
  ];
  for (const r of recs) {
    store.write(r);
    metrics.write(r);
  }
  store.flush();
});
afterAll(async () => {
  await admin.close();
  await store.close();
  t.cleanup();
});

async function get(p: string, headers: Record<string, string> = auth) {
  const res = await request(base + p, { headers });
  const text = await res.body.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, text, json, headers: res.headers };
}

describe('admin API', () => {
  it('requires the bearer token for every data and control endpoint; the probes and /metrics stay open', async () => {
    expect((await get('/healthz', {})).status).toBe(200);
    expect((await get('/readyz', {})).status).toBe(503);
    expect((await get('/metrics', {})).status).toBe(200);
    for (const p of ['/api/decisions', '/api/decisions/summary', '/api/decisions/stream', '/api/decisions/someid', '/api/policy', '/api/nope', '/metrics/']) {
      expect((await get(p, {})).status, p).toBe(401);
      expect((await get(p, { authorization: 'Bearer wrong' })).status, p).toBe(401);
      expect((await get(p, { authorization: `Basic ${TOKEN}` })).status, p).toBe(401);
    }
    const post = await request(`${base}/api/policy/reload`, { method: 'POST' });
    await post.body.dump();
    expect(post.statusCode).toBe(401);
  });

  it('lists decisions newest first with filters and cursor pagination', async () => {
    const all = await get('/api/decisions');
    expect(all.status).toBe(200);
    expect(all.json.records).toHaveLength(3);
    expect(all.json.records[0].host).toBe('evil.example');
    const denies = await get('/api/decisions?decision=deny&agent=b&limit=1');
    expect(denies.json.records).toHaveLength(1);
    expect(denies.json.nextCursor).toEqual(expect.any(String));
    const next = await get(`/api/decisions?decision=deny&agent=b&limit=1&cursor=${encodeURIComponent(denies.json.nextCursor)}`);
    expect(next.json.records).toHaveLength(1);
    expect(next.json.records[0].id).not.toBe(denies.json.records[0].id);
    expect(next.json.nextCursor).toBeNull();
    const one = await get(`/api/decisions/${all.json.records[2].id}`);
    expect(one.json).toMatchObject({ host: 'api.openai.com', agent: 'a' });
    expect((await get('/api/decisions/doesnotexist')).status).toBe(404);
  });

  it('answers bad parameters with 400 naming the parameter', async () => {
    const cases: [string, string][] = [
      ['/api/decisions?limit=0', 'limit'],
      ['/api/decisions?limit=abc', 'limit'],
      ['/api/decisions?decision=maybe', 'decision'],
      ['/api/decisions?reason=nope', 'reason'],
      ['/api/decisions?since=yesterday', 'since'],
      ['/api/decisions?until=12x', 'until'],
      ['/api/decisions?cursor=garbage', 'cursor'],
      ['/api/decisions?colour=red', 'colour'],
      ['/api/decisions/summary?limit=5', 'limit'],
      ['/api/decisions/bad%20id', 'id'],
    ];
    for (const [p, param] of cases) {
      const r = await get(p);
      expect(r.status, p).toBe(400);
      expect(r.json.message, p).toContain(param);
    }
  });

  it('summarises', async () => {
    const s = await get('/api/decisions/summary?since=3650d');
    expect(s.status).toBe(200);
    expect(s.json.totals).toEqual({ allow: 1, deny: 2 });
    expect(s.json.topDeniedHosts).toEqual([{ host: 'evil.example', count: 2 }]);
  });

  it('streams new decisions over SSE as they are stored', async () => {
    const ac = new AbortController();
    const res = await request(`${base}/api/decisions/stream?decision=deny`, { headers: auth, signal: ac.signal });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/event-stream/);
    const fresh = rec({ agent: 'c', host: 'probe.example', verdict: 'deny', reason: 'private_address', rule: null });
    let buf = '';
    const events: any[] = [];
    const done = (async () => {
      for await (const chunk of res.body) {
        buf += chunk.toString();
        if (buf.includes(': connected') && events.length === 0 && !buf.includes('event: decision')) {
          // Once connected: one allow (filtered out) and one deny.
          store.write(rec({ agent: 'c' }));
          store.write(fresh);
        }
        for (const m of buf.matchAll(/event: decision\ndata: (.*)\n\n/g)) events.push(JSON.parse(m[1]));
        if (events.length > 0) break;
      }
    })();
    const timer = setTimeout(() => ac.abort(), 10_000);
    await done.catch(() => {});
    clearTimeout(timer);
    ac.abort();
    expect(events).toHaveLength(1);
    expect(events[0]).toEqual(fresh);
  });

  it('serves the policy and reloads it, keeping the old one on a bad file', async () => {
    const p = await get('/api/policy');
    expect(p.json).toMatchObject({ reloads: 0, reloadFailures: 0, lastError: null, files: [policyFile] });
    const oldHash = p.json.hash;
    writeFileSync(policyFile, 'version: 1\nrules:\n  - name: llm\n    action: allow\n    hosts: [api.anthropic.com]\n');
    const ok = await request(`${base}/api/policy/reload`, { method: 'POST', headers: auth });
    const okBody = (await ok.body.json()) as any;
    expect(ok.statusCode).toBe(200);
    expect(okBody.ok).toBe(true);
    expect(okBody.hash).not.toBe(oldHash);
    writeFileSync(policyFile, 'version: 1\nrules: [ {name: x, action: maybe} ]\n');
    const bad = await request(`${base}/api/policy/reload`, { method: 'POST', headers: auth });
    const badBody = (await bad.body.json()) as any;
    expect(bad.statusCode).toBe(422);
    expect(badBody.ok).toBe(false);
    const after = await get('/api/policy');
    expect(after.json).toMatchObject({ hash: okBody.hash, reloads: 1, reloadFailures: 1 });
    expect(after.json.lastError.message).toEqual(expect.any(String));
  });

  it('reports readiness and serves Prometheus metrics', async () => {
    expect((await get('/readyz')).status).toBe(503);
    ready = true;
    expect((await get('/readyz')).status).toBe(200);
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toMatch(/text\/plain/);
    expect(m.text).toContain('agent_egress_decisions_total{verdict="deny",reason="no_rule",agent="b",rule="",mode="enforce"} 2');
    expect(m.text).toContain('agent_egress_store_dropped_records 0');
  });

  it('serves the page without data or tokens in it, with a strict CSP', async () => {
    const page = await get('/', {});
    expect(page.status).toBe(200);
    expect(page.text).toContain('<script type="module" src="/ui/app.js">');
    expect(page.text).not.toContain('evil.example');
    expect(page.text).not.toContain(TOKEN);
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toMatch(/default-src 'self'/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    const js = await get('/ui/app.js', {});
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/javascript/);
    const api = await get('/ui/api.js', {});
    // The token is never stored by the page: only the cookie (HttpOnly) and the in-memory CSRF token.
    expect(api.text).not.toMatch(/localStorage|sessionStorage/);
    expect((await get('/ui/app.css', {})).headers['content-type']).toMatch(/text\/css/);
    expect((await get('/ui/nope.js', {})).status).toBe(401);
  });
});

describe('admin API start-up', () => {
  const deps = () => {
    writeFileSync(policyFile, 'version: 1\nrules:\n  - name: llm\n    action: allow\n    hosts: [api.openai.com]\n');
    return { store, policy: fileHolder(policyFile), metricsRegistry: new Registry(), ready: () => true };
  };
  it('refuses a non-loopback listen address without a token', async () => {
    await expect(startAdminServer({ listen: '0.0.0.0:0', ...deps() })).rejects.toThrow(/without a token/);
    await expect(startAdminServer({ listen: '[::]:0', ...deps() })).rejects.toThrow(/without a token/);
    await expect(startAdminServer({ listen: 'nonsense', ...deps() })).rejects.toThrow(/HOST:PORT/);
  });
  it('refuses to run without a token unless told to (fail closed, loopback included)', async () => {
    await expect(startAdminServer({ listen: '127.0.0.1:0', ...deps() })).rejects.toThrow(/needs a token/);
    await expect(startAdminServer({ listen: '0.0.0.0:0', open: true, ...deps() })).rejects.toThrow(/without a token/);
  });
  it('--metrics-auth: /metrics needs the token, the probes stay open', async () => {
    const s = await startAdminServer({ listen: '127.0.0.1:0', token: TOKEN, metricsAuth: true, ...deps() });
    try {
      const at = (p: string, h: Record<string, string> = {}) => request(`http://127.0.0.1:${s.port}${p}`, { headers: h }).then(async (r) => (await r.body.dump(), r.statusCode));
      expect(await at('/metrics')).toBe(401);
      expect(await at('/metrics', auth)).toBe(200);
      expect(await at('/healthz')).toBe(200);
      expect(await at('/readyz')).toBe(200);
    } finally {
      await s.close();
    }
  });
  it('runs without a token on loopback only when explicitly open (--no-admin-auth)', async () => {
    const s = await startAdminServer({ listen: '[::1]:0', open: true, ...deps() });
    try {
      const r = await request(`http://[::1]:${s.port}/api/decisions?limit=1`);
      const body = (await r.body.json()) as any;
      expect(r.statusCode).toBe(200);
      expect(body.records).toHaveLength(1);
    } finally {
      await s.close();
    }
  });
});
