import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createSqliteStore, openSqliteStoreReadOnly, SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { buildFilter } from '../../src/decisions/query.js';
import { rec, tempDir } from './helpers.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});
function dir(): string {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

async function filled(n: number, make: (i: number) => Parameters<typeof rec>[0] = () => ({})) {
  const d = dir();
  const store = createSqliteStore({ dataDir: d });
  const recs = Array.from({ length: n }, (_, i) => rec(make(i)));
  for (const r of recs) store.write(r);
  await store.close();
  return { d, recs, file: store.file };
}

describe('SqliteDecisionStore', () => {
  it('stores records, creates the data dir, and returns them newest first with filters', async () => {
    const base = dir();
    const d = path.join(base, 'nested', 'data');
    const store = createSqliteStore({ dataDir: d });
    const a = rec({ agent: 'a', host: 'api.openai.com' });
    const b = rec({ agent: 'b', host: 'evil.example.net', verdict: 'deny', reason: 'no_rule', rule: null, status: 403 });
    const c = rec({ agent: 'a', host: 'x.evil.example.net', verdict: 'deny', reason: 'private_address', rule: null });
    for (const r of [a, b, c]) store.write(r);
    expect(store.stats().pending).toBe(3);
    await store.close();
    expect(store.stats()).toMatchObject({ pending: 0, written: 3, dropped: 0 });

    const ro = openSqliteStoreReadOnly({ dataDir: d });
    try {
      const all = await ro.query({});
      expect(all.records.map((r) => r.id)).toEqual([c.id, b.id, a.id]);
      expect(all.records[2]).toEqual(a);
      expect((await ro.query(buildFilter({ decision: 'deny' }))).records.map((r) => r.id)).toEqual([c.id, b.id]);
      expect((await ro.query(buildFilter({ agent: 'a' }))).records.map((r) => r.id)).toEqual([c.id, a.id]);
      expect((await ro.query(buildFilter({ host: '*.evil.example.net' }))).records.map((r) => r.id)).toEqual([c.id]);
      expect((await ro.query(buildFilter({ host: '*.example.net' }))).records.map((r) => r.id)).toEqual([c.id, b.id]);
      expect((await ro.query(buildFilter({ host: 'EVIL.example.net' }))).records.map((r) => r.id)).toEqual([b.id]);
      expect((await ro.query(buildFilter({ reason: 'no_rule' }))).records.map((r) => r.id)).toEqual([b.id]);
      expect((await ro.query(buildFilter({ rule: 'r1' }))).records.map((r) => r.id)).toEqual([a.id]);
      expect((await ro.query(buildFilter({ since: b.time }))).records.map((r) => r.id)).toEqual([c.id, b.id]);
      expect((await ro.query(buildFilter({ until: b.time }))).records.map((r) => r.id)).toEqual([a.id]);
      expect(await ro.get(b.id)).toEqual(b);
      expect(await ro.get('nope')).toBeNull();
    } finally {
      await ro.close();
    }
  });

  it('paginates with a cursor without gaps or repeats', async () => {
    const { d, recs } = await filled(23);
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await ro.query({ limit: 5, cursor });
      seen.push(...page.records.map((r) => r.id));
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    await ro.close();
    expect(seen).toEqual(recs.map((r) => r.id).reverse());
  });

  it('flushes by itself on the timer (and on batch size) without close()', async () => {
    const d = dir();
    const store = createSqliteStore({ dataDir: d, flushIntervalMs: 20, batchSize: 10 });
    const stored = new Promise<void>((resolve) => store.onStored(resolve));
    store.write(rec());
    await stored;
    expect(store.stats().written).toBe(1);
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    expect((await ro.query({})).records).toHaveLength(1);
    await ro.close();
    await store.close();
  });

  it('summarises totals, top hosts, agents, reasons and denies per minute', async () => {
    const t0 = Date.parse('2025-02-01T10:00:00Z');
    const { d } = await filled(6, (i) => ({
      time: new Date(t0 + i * 30_000).toISOString(),
      agent: i % 2 ? 'b' : 'a',
      host: i < 4 ? 'bad.example' : 'ok.example',
      verdict: i < 4 ? 'deny' : 'allow',
      reason: i < 4 ? (i === 0 ? 'private_address' : 'no_rule') : 'rule_allow',
    }));
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    const s = await ro.summary({});
    await ro.close();
    expect(s.totals).toEqual({ allow: 2, deny: 4 });
    expect(s.topDeniedHosts).toEqual([{ host: 'bad.example', count: 4 }]);
    expect(s.topAgents).toEqual([
      { agent: 'a', count: 3, denies: 2 },
      { agent: 'b', count: 3, denies: 2 },
    ]);
    expect(s.deniesByReason).toEqual([
      { reason: 'no_rule', count: 3 },
      { reason: 'private_address', count: 1 },
    ]);
    expect(s.deniesPerMinute).toEqual([
      { minute: t0, count: 2 },
      { minute: t0 + 60_000, count: 2 },
    ]);
  });

  it('tails records stored after a cursor, in write order', async () => {
    const d = dir();
    const w = createSqliteStore({ dataDir: d });
    w.write(rec());
    w.flush();
    const start = await w.tailAfter(null);
    expect(start.records).toEqual([]);
    const x = rec({ verdict: 'deny', reason: 'no_rule' });
    const y = rec();
    w.write(x);
    w.write(y);
    w.flush();
    const t = await w.tailAfter(start.cursor);
    expect(t.records.map((r) => r.id)).toEqual([x.id, y.id]);
    const denies = await w.tailAfter(start.cursor, { verdict: 'deny' });
    expect(denies.records.map((r) => r.id)).toEqual([x.id]);
    expect((await w.tailAfter(t.cursor)).records).toEqual([]);
    await w.close();
  });

  it('never throws when the data dir cannot be created (ENOTDIR): counts drops and reports', async () => {
    const base = dir();
    writeFileSync(path.join(base, 'afile'), 'x');
    const errors: Error[] = [];
    const store = createSqliteStore({ dataDir: path.join(base, 'afile', 'data'), onError: (e) => errors.push(e) });
    expect(errors.length).toBe(1);
    expect(() => store.write(rec())).not.toThrow();
    store.write(rec());
    expect(store.flush()).toBe(false);
    expect(store.stats()).toMatchObject({ failing: true, pending: 2 });
    await store.close();
    expect(store.stats()).toMatchObject({ dropped: 2, pending: 0, written: 0 });
    expect(errors[0].message).toMatch(/ENOTDIR|not a directory/i);
  });

  it('keeps going when the database file is a directory, and recovers once it is fixed', async () => {
    const d = dir();
    const dbPath = path.join(d, 'decisions.sqlite');
    mkdirSync(dbPath);
    const errors: Error[] = [];
    const store = createSqliteStore({ dataDir: d, onError: (e) => errors.push(e), retryMs: 1 });
    store.write(rec());
    expect(store.flush()).toBe(false);
    expect(errors.length).toBeGreaterThan(0);
    expect(store.stats()).toMatchObject({ failing: true, pending: 1 });
    rmSync(dbPath, { recursive: true });
    expect(store.flush()).toBe(true);
    expect(store.stats()).toMatchObject({ failing: false, pending: 0, written: 1, dropped: 0 });
    await store.close();
  });

  it('bounds memory while failing: records past maxPending are dropped and counted', async () => {
    const base = dir();
    writeFileSync(path.join(base, 'f'), 'x');
    const store = createSqliteStore({ dataDir: path.join(base, 'f', 'd'), maxPending: 5 });
    for (let i = 0; i < 8; i++) store.write(rec());
    expect(store.stats()).toMatchObject({ pending: 5, dropped: 3 });
    await store.close();
    expect(store.stats().dropped).toBe(8);
  });
});

describe('hash chain verify', () => {
  it('passes on an untouched store', async () => {
    const { d } = await filled(30);
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    const v = await ro.verify();
    await ro.close();
    expect(v).toMatchObject({ ok: true, checked: 30, firstSeq: 1, lastSeq: 30 });
  });

  it('detects an edited record (JSON edited with a second connection)', async () => {
    const { file, recs } = await filled(10);
    const db = new Database(file);
    const row = db.prepare('SELECT json FROM decisions WHERE seq = 4').pluck().get() as string;
    db.prepare('UPDATE decisions SET json = ? WHERE seq = 4').run(row.replace('"verdict":"allow"', '"verdict":"deny"').replace('"reason":"rule_allow"', '"reason":"rule_allow"'));
    db.prepare("UPDATE decisions SET verdict = 'deny' WHERE seq = 4").run();
    db.close();
    const ro = new SqliteDecisionStore({ file, readonly: true });
    const v = await ro.verify();
    await ro.close();
    expect(v).toMatchObject({ ok: false, problem: 'altered', seq: 4, id: recs[3].id, checked: 3 });
  });

  it('detects an edited indexed column that the JSON does not back', async () => {
    const { file, recs } = await filled(5);
    const db = new Database(file);
    db.prepare("UPDATE decisions SET host = 'innocent.example' WHERE seq = 2").run();
    db.close();
    const ro = new SqliteDecisionStore({ file, readonly: true });
    const v = await ro.verify();
    await ro.close();
    expect(v).toMatchObject({ ok: false, problem: 'altered', id: recs[1].id });
  });

  it('detects a removed record', async () => {
    const { file, recs } = await filled(10);
    const db = new Database(file);
    db.prepare('DELETE FROM decisions WHERE seq = 6').run();
    db.close();
    const ro = new SqliteDecisionStore({ file, readonly: true });
    const v = await ro.verify();
    await ro.close();
    expect(v).toMatchObject({ ok: false, problem: 'removed', seq: 7, id: recs[6].id });
  });

  it('detects an inserted record', async () => {
    const { file, recs } = await filled(8);
    const db = new Database(file);
    // Make room after seq 3 and slip a forged row in, with a plausible but wrong hash.
    db.prepare('UPDATE decisions SET seq = seq + 1000 WHERE seq > 3').run();
    db.prepare('UPDATE decisions SET seq = seq - 999 WHERE seq > 1000').run();
    const forged = rec({ host: 'forged.example' });
    db.prepare('INSERT INTO decisions (seq, id, time_ms, verdict, agent, host, reason, rule, json, hash) VALUES (4, ?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      forged.id, Date.parse(forged.time), forged.verdict, forged.agent, forged.host, forged.reason, forged.rule, JSON.stringify(forged), 'f'.repeat(64),
    );
    db.close();
    const ro = new SqliteDecisionStore({ file, readonly: true });
    const v = await ro.verify();
    await ro.close();
    expect(v).toMatchObject({ ok: false, problem: 'inserted', seq: 4, id: forged.id });
    expect(recs).toHaveLength(8);
  });

  it('verifies from --since by trusting the row before', async () => {
    const { d, recs } = await filled(10);
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    const v = await ro.verify({ sinceMs: Date.parse(recs[5].time) });
    await ro.close();
    expect(v).toMatchObject({ ok: true, checked: 5, firstSeq: 6 });
  });

  it('retention by age deletes from the start and the chain stays verifiable', async () => {
    const t0 = Date.parse('2025-03-01T00:00:00Z');
    const d = dir();
    const store = createSqliteStore({ dataDir: d, retention: { maxAgeMs: 3_600_000, batchRows: 3, intervalMs: 3_600_000 } });
    for (let i = 0; i < 10; i++) store.write(rec({ time: new Date(t0 + i * 600_000).toISOString() }));
    store.flush();
    // At t0 + 2h, records older than t0 + 1h go: i = 0..5 (t0 + 0..50 min).
    expect(store.runRetention(t0 + 7_200_000)).toBe(6);
    expect(store.stats().retained).toBe(6);
    const v = await store.verify();
    expect(v).toMatchObject({ ok: true, checked: 4, firstSeq: 7 });
    // New writes chain on; removing the oldest kept row (not via retention) is still caught.
    store.write(rec());
    store.flush();
    expect(await store.verify()).toMatchObject({ ok: true, checked: 5 });
    await store.close();
    const db = new Database(store.file);
    db.prepare('DELETE FROM decisions WHERE seq = 7').run();
    db.close();
    const ro = openSqliteStoreReadOnly({ dataDir: d });
    expect(await ro.verify()).toMatchObject({ ok: false, problem: 'removed', seq: 8 });
    await ro.close();
  });

  it('retention by size deletes oldest records until under the cap', async () => {
    const d = dir();
    const store = createSqliteStore({ dataDir: d, retention: { maxBytes: 512 * 1024, batchRows: 50, maxBatchesPerRun: 100, intervalMs: 3_600_000 } });
    for (let i = 0; i < 3000; i++) store.write(rec({ detail: { pad: 'x'.repeat(200) } }));
    store.flush();
    // Size retention runs as batches commit, and on the timer (runRetention).
    store.runRetention();
    const deleted = store.stats().retained;
    expect(deleted).toBeGreaterThan(0);
    expect(deleted).toBeLessThan(3000);
    expect(await store.verify()).toMatchObject({ ok: true, checked: 3000 - deleted });
    await store.close();
  });
});
