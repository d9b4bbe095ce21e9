import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { parseStoreLocation } from '../../src/decisions/store/location.js';
import { PostgresDecisionStore, openPostgresReader } from '../../src/decisions/store/postgres.js';
import { spoolFileFor } from '../../src/decisions/store/writer.js';
import { partitionName, dayOf, DAY_MS } from '../../src/decisions/store/pg-schema.js';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { startPostgres, writePassFile, type PgServer } from '../helpers/postgres.js';
import { rec, tempDir } from '../decisions/helpers.js';

let pg: PgServer;
const tmp = tempDir('ae-pgstore-');

beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => {
  pg?.drop();
  tmp.cleanup();
});

function loc(url = pg.urlWithPassword) {
  return parseStoreLocation(url, tmp.dir) as Extract<ReturnType<typeof parseStoreLocation>, { kind: 'postgres' }>;
}

function writer(replica: string, extra: Partial<ConstructorParameters<typeof PostgresDecisionStore>[1]['writer']> = {}, logs: string[] = []) {
  const logger = { error: (o: object, m?: string) => logs.push(`${m} ${JSON.stringify(o)}`), warn: (o: object, m?: string) => logs.push(`${m} ${JSON.stringify(o)}`), info: () => undefined };
  return new PostgresDecisionStore(loc(), {
    writer: { replica, dataDir: tmp.dir, flushIntervalMs: 10, repeats: false, retryMs: 50, retryMaxMs: 200, ...extra },
    logger,
    connectTimeoutMs: 1000,
    queryTimeoutMs: 3000,
  });
}

async function until(cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('PostgreSQL store', () => {
  it('creates the schema once with a version, partitions ahead, and indexes for every query filter', async () => {
    const a = writer('schema-a');
    const b = writer('schema-b');
    await Promise.all([a.runMaintenance(), b.runMaintenance()]);
    expect(pg.sql('SELECT version FROM agent_egress_schema', 'egress')).toBe('1');
    const today = dayOf(Date.now());
    const parts = pg.sql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'decisions'::regclass ORDER BY 1", 'egress').split('\n');
    for (const d of [today, today + DAY_MS, today + 2 * DAY_MS]) expect(parts).toContain(partitionName(d));
    const idx = pg.sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'decisions' ORDER BY 1", 'egress');
    for (const col of ['(time_ms)', '(verdict, time_ms)', '(agent, time_ms)', '(rule, time_ms)', '(reason, time_ms)', '(host text_pattern_ops)', '(replica, seq)']) expect(idx).toContain(col);
    await Promise.all([a.close(), b.close()]);
  });

  it('stores, queries and summarises both replicas, each with its own chain; verify detects an edited row', async () => {
    const a = writer('rep-a');
    const b = writer('rep-b');
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const r = rec({ host: `h${i % 3}.example.com`, verdict: i % 2 ? 'deny' : 'allow', reason: i % 2 ? 'no_rule' : 'rule_allow', rule: i % 2 ? null : 'r1' });
      ids.push(r.id);
      (i % 2 ? a : b).write(r);
    }
    await until(() => a.stats().written === 15 && b.stats().written === 15);
    const reader = await openPostgresReader(loc(pg.url.replace('egress@', `egress:${pg.password}@`)));
    const page = await reader.query({ limit: 1000, agent: 'agent-a', sinceMs: 0 });
    const mine = page.records.filter((r) => ids.includes(r.id));
    expect(mine).toHaveLength(30);
    expect(new Set(mine.map((r) => r.replica))).toEqual(new Set(['rep-a', 'rep-b']));
    expect((await reader.query({ host: 'h1.*', limit: 1000 })).records.filter((r) => ids.includes(r.id)).every((r) => r.host === 'h1.example.com')).toBe(true);
    expect((await reader.get(ids[3]))?.id).toBe(ids[3]);
    const s = await reader.summary({ sinceMs: Date.parse('2024-12-31T00:00:00Z') });
    expect(s.totals.deny).toBeGreaterThanOrEqual(15);
    const v = await reader.verify();
    expect(v.ok).toBe(true);
    const ra = v.replicas.find((r) => r.replica === 'rep-a')!;
    expect(ra.ok && ra.checked).toBe(15);
    pg.sql(`UPDATE decisions SET json = replace(json, 'h1.example.com', 'evil.example.com') WHERE id = '${ids[1]}'`, 'egress');
    const bad = await reader.verify();
    expect(bad.ok).toBe(false);
    expect(bad.replicas.find((r) => r.replica === 'rep-a')!.ok).toBe(false);
    expect(bad.replicas.find((r) => r.replica === 'rep-b')!.ok).toBe(true);
    if (!bad.ok) expect(bad.message).toContain(ids[1]);
    pg.sql(`DELETE FROM decisions WHERE replica IN ('rep-a', 'rep-b')`, 'egress');
    await Promise.all([a.close(), b.close(), reader.close()]);
  });

  it('answers the dashboard: chain position per replica, a timeline by verdict, the method filter', async () => {
    const a = writer('dash-a');
    const b = writer('dash-b');
    const base = Date.parse('2026-03-01T10:00:00Z');
    const sent: DecisionRecord[] = [];
    for (let i = 0; i < 12; i++) {
      const r = rec({ time: new Date(base + i * 10_000).toISOString(), agent: 'dash-agent', method: i % 3 ? 'GET' : 'CONNECT', verdict: i % 4 ? 'allow' : 'deny', reason: i % 4 ? 'rule_allow' : 'no_rule' });
      sent.push(r);
      (i % 2 ? a : b).write(r);
    }
    await until(() => a.stats().written === 6 && b.stats().written === 6);
    const reader = await openPostgresReader(loc());
    try {
      const f = { agent: 'dash-agent', sinceMs: base, untilMs: base + 120_000 };
      const gets = await reader.query({ ...f, method: 'GET', limit: 100 });
      expect(gets.records.map((r) => r.id).sort()).toEqual(sent.filter((r) => r.method === 'GET').map((r) => r.id).sort());
      const buckets = await reader.timeline(f, 60_000);
      expect(buckets).toEqual([
        { t: base, allow: sent.slice(0, 6).filter((r) => r.verdict === 'allow').length, deny: sent.slice(0, 6).filter((r) => r.verdict === 'deny').length },
        { t: base + 60_000, allow: sent.slice(6).filter((r) => r.verdict === 'allow').length, deny: sent.slice(6).filter((r) => r.verdict === 'deny').length },
      ]);
      // Record 3 is dash-a's second: chained to dash-a's first (record 1), not to record 2 (dash-b's).
      const first = await reader.chainPosition(sent[1].id);
      const second = await reader.chainPosition(sent[3].id);
      expect(first).toMatchObject({ seq: 1, replica: 'dash-a', headSeq: 6 });
      expect(second).toMatchObject({ seq: 2, replica: 'dash-a', prev: first!.hash, headSeq: 6 });
      expect((await reader.chainPosition(sent[2].id))?.replica).toBe('dash-b');
      expect(await reader.chainPosition('no-such-id')).toBeNull();
    } finally {
      await Promise.all([a.close(), b.close(), reader.close()]);
    }
  });

  it('a re-sent record is stored once (idempotent on id + stored time) and the chain continues', async () => {
    const a = writer('idem');
    const r = rec();
    a.write(r);
    await until(() => a.stats().written === 1);
    // The same record (same id, same acceptance time) again, as a spool redelivered after a crash would.
    const stored = Number(pg.sql(`SELECT stored_ms FROM decisions WHERE id = '${r.id}'`, 'egress'));
    const seq = await a.append([{ rec: { ...r, replica: 'idem' }, json: 'x', replica: 'idem', seq: 99, hash: 'h', storedMs: stored }]);
    expect([...seq]).toEqual([r.id]);
    a.write(rec());
    await until(() => a.stats().written === 2);
    expect(pg.sql(`SELECT count(*) FROM decisions WHERE replica = 'idem'`, 'egress')).toBe('2');
    const reader = await openPostgresReader(loc());
    expect((await reader.verify()).ok).toBe(true);
    await Promise.all([a.close(), reader.close()]);
  });

  it('database down: records wait in memory, then in the spool, and arrive once, in order, when it is back', async () => {
    const logs: string[] = [];
    const a = writer('outage', { maxMemory: 100 }, logs);
    const sent: DecisionRecord[] = [];
    const send = (n: number) => {
      for (let i = 0; i < n; i++) {
        const r = rec({ time: new Date().toISOString() });
        sent.push(r);
        a.write(r);
      }
    };
    send(50);
    await until(() => a.stats().written === 50);
    pg.stop();
    try {
      send(450);
      await until(() => a.stats().failing && a.stats().degraded === true && (a.stats().spooled ?? 0) > 0);
      await new Promise((r) => setTimeout(r, 1500)); // retries keep failing meanwhile
      expect(a.stats().pending).toBe(450);
      expect(existsSync(spoolFileFor(tmp.dir, 'outage'))).toBe(true);
    } finally {
      pg.start();
    }
    await until(() => a.stats().written === 500, 30_000);
    expect(a.stats().pending).toBe(0);
    expect(a.stats().degraded).toBe(false);
    expect(existsSync(spoolFileFor(tmp.dir, 'outage'))).toBe(false);
    const ids = pg.sql(`SELECT id FROM decisions WHERE replica = 'outage' ORDER BY seq`, 'egress').split('\n');
    expect(ids).toEqual(sent.map((r) => r.id));
    expect(logs.join('\n')).not.toContain(pg.password);
    expect(logs.some((l) => l.includes('decision store write failed')), logs.join('\n')).toBe(true);
    await a.close();
  }, 60_000);

  it('close during an outage spools everything; the next start delivers it', async () => {
    const a = writer('shutdown', { closeTimeoutMs: 500 });
    pg.stop();
    const sent: string[] = [];
    try {
      for (let i = 0; i < 120; i++) {
        const r = rec({ time: new Date().toISOString() });
        sent.push(r.id);
        a.write(r);
      }
      await a.close();
      const spool = readFileSync(spoolFileFor(tmp.dir, 'shutdown'), 'utf8').trim().split('\n');
      expect(spool).toHaveLength(120);
      expect(spool.join('\n')).not.toContain(pg.password);
    } finally {
      pg.start();
    }
    const b = writer('shutdown');
    await until(() => b.stats().written === 120, 30_000);
    expect(pg.sql(`SELECT id FROM decisions WHERE replica = 'shutdown' ORDER BY seq`, 'egress').split('\n')).toEqual(sent);
    expect(existsSync(spoolFileFor(tmp.dir, 'shutdown'))).toBe(false);
    await b.close();
  }, 60_000);

  it('retention drops whole old partitions and verify starts each chain from its anchor', async () => {
    // A replica that ran 10 days ago: its records land in partitions of those days.
    let now = Date.now() - 10 * DAY_MS;
    const old = writer('retention', { now: () => now });
    for (let d = 0; d < 3; d++) {
      for (let i = 0; i < 5; i++) old.write(rec({ time: new Date(now).toISOString() }));
      await until(() => old.stats().written === (d + 1) * 5);
      now += DAY_MS;
    }
    now = Date.now();
    for (let i = 0; i < 5; i++) old.write(rec({ time: new Date(now).toISOString() }));
    await until(() => old.stats().written === 20);
    const oldPart = partitionName(dayOf(Date.now() - 10 * DAY_MS));
    expect(pg.sql(`SELECT to_regclass('${oldPart}') IS NOT NULL`, 'egress')).toBe('t');
    await old.close();
    const keeper = writer('retention', { retention: { maxAgeMs: 5 * DAY_MS } });
    await keeper.runMaintenance();
    expect(pg.sql(`SELECT to_regclass('${oldPart}') IS NOT NULL`, 'egress')).toBe('f');
    expect(keeper.stats().retained).toBeGreaterThanOrEqual(15);
    expect(pg.sql(`SELECT count(*) FROM decisions WHERE replica = 'retention'`, 'egress')).toBe('5');
    expect(pg.sql(`SELECT seq FROM decision_anchors WHERE replica = 'retention'`, 'egress')).toBe('15');
    const reader = await openPostgresReader(loc());
    const v = await reader.verify();
    expect(v.replicas.find((r) => r.replica === 'retention')).toMatchObject({ ok: true, checked: 5 });
    await Promise.all([keeper.close(), reader.close()]);
  }, 60_000);

  it('password from PGPASSWORD, a libpq password file, or --store-password-file; a wrong one is an error without it', async () => {
    const pass = writePassFile(pg, tmp.dir);
    const saved = { pw: process.env.PGPASSWORD, file: process.env.PGPASSFILE };
    try {
      process.env.PGPASSWORD = pg.password;
      await (await openPostgresReader(loc(pg.url))).close();
      delete process.env.PGPASSWORD;
      process.env.PGPASSFILE = pass;
      await (await openPostgresReader(loc(pg.url))).close();
      delete process.env.PGPASSFILE;
      const pwFile = `${tmp.dir}/pw`;
      const { writeFileSync } = await import('node:fs');
      writeFileSync(pwFile, `${pg.password}\n`, { mode: 0o600 });
      await (await openPostgresReader(parseStoreLocation(pg.url, tmp.dir, pwFile) as never)).close();
      const wrong = `${pg.password}-wrong`;
      const err = await openPostgresReader(loc(pg.url.replace('egress@', `egress:${wrong}@`))).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain('postgres://egress:***@127.0.0.1');
      expect((err as Error).message).not.toContain(wrong);
    } finally {
      if (saved.pw === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = saved.pw;
      if (saved.file === undefined) delete process.env.PGPASSFILE;
      else process.env.PGPASSFILE = saved.file;
    }
  });

  it('honours sslmode: require refuses a server without TLS, disable connects', async () => {
    const w = writer('ssl');
    await w.runMaintenance(); // the schema, should this test run alone
    await w.close();
    const err = await openPostgresReader(loc(`${pg.urlWithPassword}?sslmode=require`)).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/SSL/i);
    expect((err as Error).message).not.toContain(pg.password);
    await (await openPostgresReader(loc(`${pg.urlWithPassword}?sslmode=disable`))).close();
  });
});
