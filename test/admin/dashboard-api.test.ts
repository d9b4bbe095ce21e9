import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { Registry } from 'prom-client';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { SpikeDetector } from '../../src/decisions/alerts.js';
import { RecentAlerts } from '../../src/decisions/alert-log.js';
import { compilePolicy, loadPolicyFile } from '../../src/policy/index.js';
import type { PolicyHolder, PolicyState } from '../../src/policy/holder.js';
import { rec, tempDir } from '../decisions/helpers.js';

const TOKEN = 'dashboard-api-token-for-tests';
const t = tempDir('ae-dash-api-');
const policyFile = path.join(t.dir, 'policy.yaml');
let store: SqliteDecisionStore;
let admin: AdminServer;
let base: string;
let policyHash = '';
const now = Date.now();
const allowed = rec({ time: new Date(now - 120_000).toISOString(), agent: 'a', host: 'api.openai.com', rule: 'llm', reason: 'rule_allow' });
const denied = rec({ time: new Date(now - 60_000).toISOString(), agent: 'b', host: 'new.example.org', port: 8443, verdict: 'deny', reason: 'no_rule', rule: null });

beforeAll(async () => {
  writeFileSync(policyFile, 'version: 1\nrules:\n  - name: llm\n    action: allow\n    hosts: [api.openai.com]\n');
  const policy = compilePolicy(loadPolicyFile(policyFile));
  policyHash = policy.hash;
  const st: PolicyState = { policy, loadedAt: new Date().toISOString(), files: [policyFile], reloads: 0, reloadFailures: 0, lastError: null };
  const holder: PolicyHolder = { current: () => st.policy, state: () => st, onChange: () => {}, reload: async () => ({ ok: true, hash: policy.hash }) };
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10, repeats: false });
  const recent = new RecentAlerts();
  const detector = new SpikeDetector({ threshold: 3, windowMs: 10_000, multiplier: 1, onAlert: (a) => recent.push(a), logger: { warn() {}, error() {} } });
  const records = [{ ...allowed, policyHash }, denied];
  for (let i = 0; i < 4; i++) records.push(rec({ time: new Date(now - 30_000 + i).toISOString(), agent: 'c', host: `x${i}.spam.example`, verdict: 'deny', reason: 'no_rule', rule: null }));
  for (const r of records) {
    store.write(r);
    detector.write(r);
  }
  store.flush();
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: TOKEN, store, policy: holder, metricsRegistry: new Registry(), ready: () => true, alerts: { recent, ...detector.settings } });
  base = `http://127.0.0.1:${admin.port}`;
});
afterAll(async () => {
  await admin.close();
  await store.close();
  t.cleanup();
});

async function get(p: string) {
  const res = await request(base + p, { headers: { authorization: `Bearer ${TOKEN}` } });
  return { status: res.statusCode, json: (await res.body.json()) as any };
}

describe('dashboard API', () => {
  it("a record's detail: every field, the matched rule from the policy in force, its chain position, rules to paste", async () => {
    const d = await get(`/api/decisions/${allowed.id}/detail`);
    expect(d.status).toBe(200);
    expect(d.json.record).toEqual({ ...allowed, policyHash });
    expect(d.json.rule).toMatchObject({ name: 'llm', action: 'allow', hosts: ['api.openai.com'], agent: null });
    expect(d.json.ruleFromCurrentPolicy).toBe(true);
    expect(d.json.chain).toMatchObject({ seq: 1, prev: '0'.repeat(64), headSeq: 6 });
    const n = await get(`/api/decisions/${denied.id}/detail`);
    expect(n.json.rule).toBeNull();
    expect(n.json.chain.prev).toBe(d.json.chain.hash);
    expect(n.json.snippets.allow).toContain('new.example.org');
    expect(n.json.snippets.deny).toContain('action: deny');
    expect(n.json.snippets.agent).toBe('b');
    expect((await get('/api/decisions/nope/detail')).status).toBe(404);
  });

  it('time buckets over a range with the alert threshold scaled to the bucket, and the spike alerts in it', async () => {
    const tl = await get('/api/decisions/timeline?since=10m&bucket=1m');
    expect(tl.status).toBe(200);
    expect(tl.json.bucketMs).toBe(60_000);
    const sum = (k: 'allow' | 'deny') => tl.json.buckets.reduce((n: number, b: any) => n + b[k], 0);
    expect(sum('allow')).toBe(1);
    expect(sum('deny')).toBe(5);
    expect(tl.json.alert).toEqual({ threshold: 3, windowMs: 10_000, perBucket: 18 });
    expect(tl.json.alerts).toHaveLength(1);
    expect(tl.json.alerts[0]).toMatchObject({ type: 'deny_spike', agent: 'c' });
    // Without a bucket: at most ~120 columns over the range.
    const auto = await get('/api/decisions/timeline?since=24h');
    expect(auto.json.bucketMs).toBe(900_000);
    const denies = await get('/api/decisions/timeline?since=10m&decision=deny&agent=c');
    expect(denies.json.buckets.reduce((n: number, b: any) => n + b.deny + b.allow, 0)).toBe(4);
    for (const bad of ['bucket=0s', 'bucket=1x', 'since=1h&bucket=1s&until=2020-01-01', 'since=30d&bucket=1s', 'colour=red']) {
      expect((await get(`/api/decisions/timeline?${bad}`)).status, bad).toBe(400);
    }
  });

  it('recent spike alerts, and the query API filters by method', async () => {
    const a = await get('/api/alerts');
    expect(a.json).toMatchObject({ enabled: true, threshold: 3, windowMs: 10_000 });
    expect(a.json.alerts.map((x: any) => x.agent)).toEqual(['c']);
    expect((await get('/api/decisions?method=CONNECT')).json.records).toHaveLength(6);
    expect((await get('/api/decisions?method=GET')).json.records).toHaveLength(0);
    expect((await get('/api/decisions?method=G%20T')).status).toBe(400);
  });
});
