import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

// The issue-3 "done when", through the real runtime: the proxy with its store, metrics and admin API.
const dir = mkdtempSync(join(tmpdir(), 'ae-dlog-'));
const TOKEN = 'test-admin-token';
let origin: Origin;
let proxy: TestProxy;
let admin: string;
let policyFile: string;

const api = async (path: string, init: { method?: 'GET' | 'POST'; token?: string | null } = {}) => {
  const headers: Record<string, string> = {};
  if (init.token !== null) headers.authorization = `Bearer ${init.token ?? TOKEN}`;
  const res = await request(`${admin}${path}`, { method: init.method ?? 'GET', headers });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: () => JSON.parse(text) };
};

beforeAll(async () => {
  origin = await startHttpOrigin();
  policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: origin\n    action: allow\n    cidrs: [127.0.0.1/32]\n    ports: [${origin.port}]\n`);
  proxy = await startTestProxy({
    policyFile,
    store: { dataDir: join(dir, 'data') },
    admin: { listen: '127.0.0.1:0', token: TOKEN },
    alerts: { windowMs: 60_000, threshold: 50, multiplier: 1 },
  });
  admin = `http://127.0.0.1:${proxy.egress.admin!.port}`;
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
});

describe('decision log through the running proxy', () => {
  it('blocked attempts under load are queryable while the proxy serves, counted in /metrics, with a spike alert metric', async () => {
    // A burst of denied CONNECTs, 8 at a time, while the API is queried in between.
    const hosts = Array.from({ length: 200 }, (_, i) => `exfil-${i}.attacker.example`);
    for (let i = 0; i < hosts.length; i += 8) {
      const batch = hosts.slice(i, i + 8).map((h) => rawExchange(proxy.port, `CONNECT ${h}:443 HTTP/1.1\r\nHost: ${h}:443\r\n\r\n`));
      const out = await Promise.all(batch);
      for (const r of out) expect(r).toMatch(/^HTTP\/1\.1 403 /);
      if (i % 64 === 0) expect((await api('/api/decisions?decision=deny&limit=5')).status).toBe(200);
    }
    // Batched writes land within a flush interval; poll (bounded) until all are stored.
    let stored = 0;
    for (let i = 0; i < 50 && stored < 200; i++) {
      const s = (await api('/api/decisions/summary?since=10m')).json();
      stored = s.totals?.deny ?? s.deny ?? 0;
      if (stored < 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(stored).toBe(200);
    const page = (await api('/api/decisions?decision=deny&host=exfil-1*.attacker.example&limit=1000')).json();
    expect(page.records.length).toBe(111);
    expect(page.records.every((r: { reason: string }) => r.reason === 'no_rule')).toBe(true);

    const metrics = await api('/metrics');
    expect(metrics.text).toMatch(/agent_egress_decisions_total\{[^}]*verdict="deny"[^}]*reason="no_rule"[^}]*\} 200/);
    expect(metrics.text).toMatch(/agent_egress_spike_alerts_total\S* 1/);
  });

  it('the admin API needs the token (except /healthz) and bad parameters get 400 naming them', async () => {
    expect((await api('/healthz', { token: null })).status).toBe(200);
    expect((await api('/api/decisions', { token: null })).status).toBe(401);
    expect((await api('/api/decisions', { token: 'wrong' })).status).toBe(401);
    const bad = await api('/api/decisions?decision=maybe');
    expect(bad.status).toBe(400);
    expect(bad.text).toMatch(/decision/);
  });

  it('the proxy refuses to reach its own admin listener, even with loopback exempted', async () => {
    const port = proxy.egress.admin!.port;
    writeFileSync(policyFile, `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: origin\n    action: allow\n    cidrs: [127.0.0.1/32]\n    ports: [${origin.port}, ${port}]\n`);
    const reload = await api('/api/policy/reload', { method: 'POST' });
    expect(reload.status).toBe(200);
    const res = await rawExchange(proxy.port, `GET http://127.0.0.1:${port}/api/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/private_address/);
    const policy = (await api('/api/policy')).json();
    expect(JSON.stringify(policy)).toContain(proxy.egress.holder.current().hash);
  });

  it('a bad policy via the API keeps the running one and reports the failure; open tunnels are untouched', async () => {
    const t = await openRaw(proxy.port);
    t.socket.write(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`);
    expect(await t.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    const before = proxy.egress.holder.current().hash;
    writeFileSync(policyFile, 'version: 1\nrules: [ {name: x, action: allow, hosts: ["*"], ports: [99999]} ]\n');
    const r = await api('/api/policy/reload', { method: 'POST' });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(proxy.egress.holder.current().hash).toBe(before);
    // The failure is reported where an operator looks: the reload answer and the policy's lastError,
    // naming the file, the line and the bad value (not just any mention of "port" in the running policy).
    expect(r.json().ok).toBe(false);
    const state = (await api('/api/policy')).json();
    expect(state.reloadFailures).toBeGreaterThanOrEqual(1);
    expect(state.lastError.message).toContain(policyFile);
    expect(state.lastError.message).toMatch(/:2\b/);
    expect(state.lastError.message).toContain('99999');
    expect(JSON.stringify(state.policy)).not.toContain('99999');
    // The tunnel goes to 127.0.0.1: a plain request inside it must name that host (tunnel content check).
    t.socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`);
    expect(await t.read('hello')).toContain('hello');
    t.socket.destroy();
  });
});
