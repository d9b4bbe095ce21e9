import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { rawExchange } from '../helpers/raw.js';
import { startPostgres, type PgServer } from '../helpers/postgres.js';
import { tempDir } from '../decisions/helpers.js';

// Issue 14: replicas sharing one PostgreSQL store, through real proxy processes, real traffic and a
// real database that is stopped and started under them.

const BIN = path.resolve(import.meta.dirname, '../../bin/agent-egress.js');
const tmp = tempDir('ae-fleet-');
let pg: PgServer;
let origin: Origin;
const everything: string[] = []; // every stderr line of every process, for the password check

interface Replica {
  name: string;
  dataDir: string;
  child: ChildProcess;
  port: number;
  admin: string;
  token: string;
  stderr: () => string;
  exit: Promise<number | null>;
}

beforeAll(async () => {
  pg = await startPostgres();
  origin = await startHttpOrigin();
}, 60_000);
afterAll(async () => {
  await origin?.close();
  pg?.drop();
  tmp.cleanup();
});

const env = () => ({ ...process.env, PGPASSWORD: pg.password, AGENT_EGRESS_ADMIN_TOKEN: '' });

/** One replica: `serve --store postgres://...` as its own process, with its own data dir. */
async function startReplica(name: string, extra: string[] = [], opts: { inlinePassword?: boolean } = {}): Promise<Replica> {
  const dataDir = path.join(tmp.dir, name);
  const url = opts.inlinePassword ? pg.urlWithPassword : pg.url;
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--store', url, '--replica-name', name, '--data-dir', dataDir,
      '--allow', `127.0.0.1/32:${origin.port}`, '--allow-address', '127.0.0.1/32', '--no-decision-log', '--shutdown-grace', '2s', '--log-format', 'json', ...extra],
    { stdio: ['ignore', 'ignore', 'pipe'], env: opts.inlinePassword ? { ...process.env, PGPASSWORD: '' } : env() },
  );
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
    everything.push(String(d));
  });
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const end = Date.now() + 30_000;
  while (!/"listen":"127\.0\.0\.1:\d+"/.test(err)) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`replica ${name} did not start: ${err}`);
    await sleep(50);
  }
  const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(err)![1]);
  const admin = `http://127.0.0.1:${/"admin":"127\.0\.0\.1:(\d+)"/.exec(err)![1]}`;
  const token = readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim();
  return { name, dataDir, child, port, admin, token, stderr: () => err, exit };
}

async function stopReplica(r: Replica): Promise<number | null> {
  if (r.child.exitCode === null) r.child.kill('SIGTERM');
  return r.exit;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Denied CONNECTs to distinct names (so none is folded as a repeat): one record each. */
async function denies(r: Replica, tag: string, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i += 10) {
    const out = await Promise.all(Array.from({ length: Math.min(10, from + n - i) }, (_, k) => rawExchange(r.port, `CONNECT d${i + k}.${tag}.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`)));
    for (const o of out) expect(o).toMatch(/^HTTP\/1\.1 403 /);
  }
}

/** Allowed plain requests through the replica to the local origin. */
async function allows(r: Replica, tag: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const out = await rawExchange(r.port, `GET http://127.0.0.1:${origin.port}/${tag}/${i} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
    expect(out).toMatch(/^HTTP\/1\.1 200 /);
  }
}

function cli(args: string[], extraEnv: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...env(), ...extraEnv }, timeout: 60_000, maxBuffer: 256 * 1024 * 1024 });
  everything.push(r.stderr, r.stdout);
  return r;
}

function queryAll(filter: string[]): Record<string, unknown>[] {
  const r = cli(['log', 'query', '--store', pg.url, '--limit', '0', '--json', ...filter]);
  expect(r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function untilCount(filter: string[], n: number, ms = 30_000): Promise<Record<string, unknown>[]> {
  const end = Date.now() + ms;
  for (;;) {
    const rows = queryAll(filter);
    if (rows.length >= n || Date.now() > end) return rows;
    await sleep(250);
  }
}

async function api(r: Replica, p: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${r.admin}${p}`, { headers: { authorization: `Bearer ${r.token}` } });
  return { status: res.status, body: await res.text() };
}

describe('two replicas sharing one PostgreSQL store', () => {
  let a: Replica;
  let b: Replica;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startReplica('replica-a', ['--alert-threshold', '20', '--alert-window', '10s'], { inlinePassword: true }),
      startReplica('replica-b', ['--alert-threshold', '20', '--alert-window', '10s']),
    ]);
  }, 60_000);
  afterAll(async () => {
    if (process.env.DEBUG_FLEET) console.log(a.stderr(), b.stderr());
    await Promise.all([a, b].filter(Boolean).map(stopReplica));
  });

  it('a spike split across the replicas alerts once, not once per replica', async () => {
    // One replica holds the alerting lock before the spike starts.
    const end = Date.now() + 15_000;
    while (pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4 AND granted", 'egress') !== '1') {
      if (Date.now() > end) throw new Error('no replica took the alerting lock');
      await sleep(100);
    }
    await sleep(1000);
    await Promise.all([denies(a, 'spike', 0, 15), denies(b, 'spike', 15, 15)]);
    const spikes = () => (a.stderr() + b.stderr()).split('\n').filter((l) => l.includes('deny spike'));
    const until = Date.now() + 15_000;
    while (spikes().length === 0 && Date.now() < until) await sleep(200);
    await sleep(2000); // time for a second alert, if there were one
    expect(spikes()).toHaveLength(1);
    expect(spikes()[0]).toMatch(/had (2\d|30) denies/);
  }, 60_000);

  it('log query, the API of either replica and log tail see both, with replica names', async () => {
    const tail = spawn(process.execPath, [BIN, 'log', 'tail', '--store', pg.url, '--json', '--host', '*.tail.example'], { stdio: ['ignore', 'pipe', 'pipe'], env: env() });
    let tailed = '';
    let tailErr = '';
    tail.stdout!.on('data', (d) => (tailed += d));
    tail.stderr!.on('data', (d) => {
      tailErr += d;
      everything.push(String(d));
    });
    await Promise.all([denies(a, 'both', 0, 20), denies(b, 'both', 20, 20), allows(a, 'both', 5), allows(b, 'both', 5)]);
    // The tail starts at the head once it runs: send through each replica until it has shown one of each.
    const tailEnd = Date.now() + 20_000;
    for (let i = 0; !(tailed.includes('"replica":"replica-a"') && tailed.includes('"replica":"replica-b"')) && Date.now() < tailEnd; i += 2) {
      await Promise.all([denies(a, 'tail', i, 1), denies(b, 'tail', i + 1, 1)]);
      await sleep(700);
    }
    tail.kill('SIGTERM');
    expect(tailErr).toBe('');
    const tails = tailed.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { replica: string; host: string });
    expect(tails.every((t) => t.host.endsWith('.tail.example'))).toBe(true);
    expect(new Set(tails.map((t) => t.replica))).toEqual(new Set(['replica-a', 'replica-b']));
    const rows = await untilCount(['--host', '*.both.example'], 40);
    expect(rows).toHaveLength(40);
    expect(new Set(rows.map((r) => r.replica))).toEqual(new Set(['replica-a', 'replica-b']));
    const fromA = JSON.parse((await api(a, '/api/decisions?host=*.both.example&limit=1000')).body) as { records: { replica: string }[] };
    expect(fromA.records).toHaveLength(40);
    expect(new Set(fromA.records.map((r) => r.replica))).toEqual(new Set(['replica-a', 'replica-b']));
    const sum = await api(b, '/api/decisions/summary?since=1h');
    expect(sum.status, `${sum.body}\n${b.stderr()}`).toBe(200);
    const summary = JSON.parse(sum.body) as { totals: { allow: number; deny: number } };
    expect(summary.totals.allow).toBeGreaterThanOrEqual(10);
    const table = cli(['log', 'query', '--store', pg.url, '--host', '*.both.example', '--limit', '3']);
    expect(table.status).toBe(0);
    expect(table.stdout.split('\n').filter((l) => l.includes('.both.example'))).toHaveLength(3);
    const cliSummary = cli(['log', 'summary', '--store', pg.url, '--json', '--host', '*.both.example']);
    expect(JSON.parse(cliSummary.stdout).totals).toEqual({ allow: 0, deny: 40 });
    const suggest = cli(['policy', 'suggest', '--store', pg.url, '--since', '1h']);
    expect(suggest.status).toBe(0);
    expect(suggest.stdout).toContain('both.example');
  }, 60_000);

  it('log verify passes for every replica, then names the replica and record of an edited row', async () => {
    const ok = cli(['log', 'verify', '--store', pg.url]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^ok: \d+ records verified in 2 replica chain\(s\)/);
    expect(ok.stdout).toMatch(/replica-a: ok/);
    expect(ok.stdout).toMatch(/replica-b: ok/);
    const id = pg.sql("SELECT id FROM decisions WHERE replica = 'replica-b' AND host LIKE '%.both.example' ORDER BY seq LIMIT 1 OFFSET 3", 'egress');
    const json = pg.sql(`SELECT json FROM decisions WHERE id = '${id}'`, 'egress');
    pg.sql(`UPDATE decisions SET json = replace(json, '"verdict":"deny"', '"verdict":"allow"'), verdict = 'allow' WHERE id = '${id}'`, 'egress');
    try {
      const bad = cli(['log', 'verify', '--store', pg.url]);
      expect(bad.status).toBe(1);
      expect(bad.stdout).toMatch(/^FAILED/);
      expect(bad.stdout).toMatch(new RegExp(`replica-b: FAILED: record ${id} \\(seq \\d+\\) was altered`));
      expect(bad.stdout).toMatch(/replica-a: ok/);
    } finally {
      pg.sql(`UPDATE decisions SET json = '${json.replace(/'/g, "''")}', verdict = 'deny' WHERE id = '${id}'`, 'egress');
    }
    expect(cli(['log', 'verify', '--store', pg.url]).status).toBe(0);
  }, 60_000);

  it('PostgreSQL stopped in the middle of a burst: the proxies keep serving, say they are degraded, and every record arrives exactly once', async () => {
    await Promise.all([denies(a, 'outage', 0, 50), denies(b, 'outage', 50, 50)]);
    pg.stop();
    let stopped = true;
    try {
      await Promise.all([denies(a, 'outage', 100, 100), denies(b, 'outage', 200, 100), allows(a, 'outage', 10)]);
      // Several seconds down; both replicas answer their probes and say what waits.
      const end = Date.now() + 15_000;
      let health: { ok: boolean; store: { degraded: boolean; pendingRecords: number } } | null = null;
      while (Date.now() < end) {
        health = JSON.parse((await api(a, '/healthz')).body);
        if (health!.store.degraded) break;
        await sleep(200);
      }
      expect(health).toMatchObject({ ok: true, store: { degraded: true } });
      expect(health!.store.pendingRecords).toBeGreaterThan(0);
      expect((await api(a, '/readyz')).status).toBe(200);
      const metrics = (await api(b, '/metrics')).body;
      expect(metrics).toMatch(/^agent_egress_store_degraded 1$/m);
      expect(Number(/^agent_egress_store_pending_records (\d+)$/m.exec(metrics)![1])).toBeGreaterThan(0);
      await sleep(2000);
      await denies(b, 'outage', 300, 20);
      pg.start();
      stopped = false;
    } finally {
      if (stopped) pg.start();
    }
    const rows = await untilCount(['--host', '*.outage.example'], 320, 60_000);
    expect(rows).toHaveLength(320);
    expect(new Set(rows.map((r) => r.id)).size).toBe(320);
    const end = Date.now() + 15_000;
    while (JSON.parse((await api(a, '/healthz')).body).store.degraded && Date.now() < end) await sleep(200);
    expect(JSON.parse((await api(a, '/healthz')).body).store).toMatchObject({ degraded: false, pendingRecords: 0 });
    expect(cli(['log', 'verify', '--store', pg.url]).status).toBe(0);
  }, 120_000);

  it('SIGTERM during an outage leaves the spool on disk, and the next start delivers it', async () => {
    pg.stop();
    let c: Replica | null = null;
    try {
      await denies(b, 'spooled', 0, 60);
      expect(await stopReplica(b)).toBe(0);
      const spool = path.join(b.dataDir, 'store-spool-replica-b.jsonl');
      expect(existsSync(spool)).toBe(true);
      expect(readFileSync(spool, 'utf8').split('\n').filter((l) => l.includes('.spooled.example'))).toHaveLength(60);
      expect(b.stderr()).toMatch(/records spooled for the next start/);
    } finally {
      pg.start();
    }
    c = await startReplica('replica-b');
    b = c;
    const rows = await untilCount(['--host', '*.spooled.example'], 60);
    expect(rows).toHaveLength(60);
    expect(new Set(rows.map((r) => r.replica))).toEqual(new Set(['replica-b']));
    const end = Date.now() + 10_000;
    while (existsSync(path.join(b.dataDir, 'store-spool-replica-b.jsonl')) && Date.now() < end) await sleep(100);
    expect(existsSync(path.join(b.dataDir, 'store-spool-replica-b.jsonl'))).toBe(false);
    expect(cli(['log', 'verify', '--store', pg.url]).status).toBe(0);
  }, 90_000);

  it('the password appears in no log line, record, error or API answer; the URL is shown redacted', async () => {
    expect(a.stderr()).toContain(`postgres://egress:***@127.0.0.1:${pg.port}/egress`);
    const wrong = cli(['log', 'query', '--store', pg.urlWithPassword.replace(pg.password, `${pg.password}x`)], { PGPASSWORD: '' });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/^agent-egress: decision store postgres:\/\/egress:\*\*\*@127\.0\.0\.1:\d+\/egress: /);
    const dump = pg.sql('SELECT string_agg(json, \'\') FROM decisions', 'egress');
    const all = [...everything, dump, (await api(a, '/api/decisions?limit=1000')).body, (await api(a, '/metrics')).body].join('\n');
    expect(all.length).toBeGreaterThan(1000);
    expect(all).not.toContain(pg.password);
  }, 30_000);
});

describe('serve --workers with a PostgreSQL store', () => {
  it('each worker writes as its own replica (<name>-w<slot>) with its own chain; the primary answers for all', async () => {
    const w = await startReplica('pool', ['--workers', '2', '--no-alerts']);
    try {
      await denies(w, 'workers', 0, 40);
      const rows = await untilCount(['--host', '*.workers.example'], 40);
      expect(rows).toHaveLength(40);
      const names = new Set(rows.map((r) => r.replica as string));
      expect([...names].every((n) => n === 'pool-w1' || n === 'pool-w2')).toBe(true);
      const viaPrimary = JSON.parse((await api(w, '/api/decisions?host=*.workers.example&limit=1000')).body) as { records: unknown[] };
      expect(viaPrimary.records).toHaveLength(40);
      const v = cli(['log', 'verify', '--store', pg.url, '--json']);
      expect(v.status).toBe(0);
      const chains = (JSON.parse(v.stdout) as { replicas: { replica: string; ok: boolean }[] }).replicas.filter((r) => r.replica.startsWith('pool-'));
      expect(chains.length).toBe(names.size);
      expect(chains.every((c) => c.ok)).toBe(true);
    } finally {
      expect(await stopReplica(w)).toBe(0);
    }
  }, 120_000);
});
