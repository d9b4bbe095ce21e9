import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import type { PolicyHolder } from '../../src/policy/holder.js';
import { rec, tempDir } from './helpers.js';

// Issue 12: records of connections the companion firewall redirected carry `capture: transparent`; the
// log and the API find them (and the methods SOCKS5, CONNECT, ...) with one filter each.

const BIN = path.resolve(import.meta.dirname, '../../bin/agent-egress.js');
const t = tempDir('ae-capture-filter-');
let store: SqliteDecisionStore;
let admin: AdminServer;
const now = Date.now();
const transparent = [rec({ time: new Date(now - 3000).toISOString(), host: 'a.example', capture: 'transparent' }), rec({ time: new Date(now - 2000).toISOString(), host: 'b.example', capture: 'transparent', verdict: 'deny', reason: 'no_name', rule: null })];
const socks = rec({ time: new Date(now - 1500).toISOString(), host: 'c.example', method: 'SOCKS5' });
const connect = rec({ time: new Date(now - 1000).toISOString(), host: 'd.example' });

beforeAll(async () => {
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
  for (const r of [...transparent, socks, connect]) store.write(r);
  store.flush();
  const policy = { state: () => ({}) } as unknown as PolicyHolder;
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: 'tok', store, policy, metricsRegistry: new Registry(), ready: () => true });
});

afterAll(async () => {
  await admin?.close();
  await store?.close();
  t.cleanup();
});

const cli = (...args: string[]) => spawnSync('node', [BIN, 'log', 'query', '--data-dir', t.dir, '--json', ...args], { encoding: 'utf8' });
const ids = (out: string) => out.trim().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id).sort();

describe('filters on how a connection was captured and on its method', () => {
  it('log query --capture transparent lists only the redirected connections; --method SOCKS5 only SOCKS5', () => {
    const r = cli('--capture', 'transparent');
    expect(r.status, r.stderr).toBe(0);
    expect(ids(r.stdout)).toEqual(transparent.map((x) => x.id).sort());
    const s = cli('--method', 'socks5');
    expect(s.status, s.stderr).toBe(0);
    expect(ids(s.stdout)).toEqual([socks.id]);
  });

  it('the API takes the same filters; a bad value is one line and exit 2 on the CLI, 400 from the API', async () => {
    const res = await fetch(`http://127.0.0.1:${admin.port}/api/decisions?capture=transparent&limit=100`, { headers: { authorization: 'Bearer tok' } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { records: { id: string }[] };
    expect(body.records.map((r) => r.id).sort()).toEqual(transparent.map((x) => x.id).sort());
    const bad = await fetch(`http://127.0.0.1:${admin.port}/api/decisions?capture=sideways`, { headers: { authorization: 'Bearer tok' } });
    expect(bad.status).toBe(400);
    const r = cli('--capture', 'sideways');
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
