import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { weightOf, type DecisionRecord } from '../../src/decisions/record.js';
import { createSqliteStore, openSqliteStoreReadOnly, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { startTestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';
import { rec, tempDir } from './helpers.js';

// Issue 9 item 7: under a deny flood the store holds its --retention-size bound, one agent cannot drown
// the others' records, repeated identical denials are counted exactly, and the chain stays valid.

const MB = 1024 * 1024;
const t = tempDir('ae-retention-');
afterAll(() => t.cleanup());

/** What the store occupies on disk: the database and its WAL. */
function onDisk(file: string): number {
  return [file, `${file}-wal`].reduce((n, f) => n + (existsSync(f) ? statSync(f).size : 0), 0);
}

const deny = (over: Partial<DecisionRecord>) =>
  rec({ time: new Date().toISOString(), verdict: 'deny', reason: 'no_rule', rule: null, status: 403, address: null, bytesUp: 0, bytesDown: 0, ...over });

async function writeInBatches(store: SqliteDecisionStore, n: number, make: (i: number) => DecisionRecord, onBatch?: () => void): Promise<void> {
  for (let i = 0; i < n; i++) {
    store.write(make(i));
    if (i % 500 === 499) {
      store.flush();
      onBatch?.();
      await new Promise((r) => setImmediate(r));
    }
  }
  store.flush();
}

describe('retention under a flood', () => {
  it('a flood of distinct denies stays within --retention-size on disk, the chain verifies, the newest records survive', async () => {
    const dataDir = path.join(t.dir, 'distinct');
    const store = createSqliteStore({ dataDir, retention: { maxBytes: 5 * MB, intervalMs: 3_600_000 } });
    const pad = 'p'.repeat(300);
    let peak = 0;
    const N = 40_000; // about 30 MB of records: six times the bound
    await writeInBatches(
      store,
      N,
      (i) => (i % 1000 === 999 ? rec({ time: new Date().toISOString(), agent: 'quiet', host: `quiet-${i}.example` }) : deny({ agent: 'flood', host: `x${i}.attacker.example`, detail: { pad } })),
      () => (peak = Math.max(peak, onDisk(store.file))),
    );
    expect(store.stats().retained).toBeGreaterThan(N / 2);
    expect(peak).toBeGreaterThan(4 * MB); // it really filled up to the bound
    expect(peak).toBeLessThan(6.5 * MB); // and not past it: the database, its free-page reserve and the WAL
    expect(onDisk(store.file)).toBeLessThan(6.5 * MB);
    await store.close();

    const ro = openSqliteStoreReadOnly({ dataDir });
    expect(await ro.verify()).toMatchObject({ ok: true });
    const quiet = (await ro.query({ agent: 'quiet', limit: 1000 })).records.map((r) => r.host);
    expect(quiet.slice(0, 5)).toEqual([39_999, 38_999, 37_999, 36_999, 35_999].map((i) => `quiet-${i}.example`));
    await ro.close();
    const db = new Database(store.file, { readonly: true });
    expect(db.pragma('auto_vacuum', { simple: true })).toBe(2); // INCREMENTAL: deleted pages go back
    db.close();
  }, 120_000);

  it('repeated identical denials from one agent are folded with an exact count; every other record is kept', async () => {
    const dataDir = path.join(t.dir, 'identical');
    const store = createSqliteStore({ dataDir, retention: { maxBytes: 5 * MB, intervalMs: 3_600_000 } });
    const N = 20_000;
    const others: string[] = [];
    const distinct: string[] = [];
    await writeInBatches(store, N, (i) => {
      if (i % 100 === 0) {
        const r = rec({ time: new Date().toISOString(), agent: 'quiet', host: `q${i}.example` });
        others.push(r.id);
        return r;
      }
      if (i % 1000 === 1) {
        distinct.push(`other${i}.attacker.example`);
        return deny({ agent: 'flood', host: `other${i}.attacker.example` });
      }
      return deny({ agent: 'flood', host: 'loop.attacker.example', client: `127.0.0.1:${40000 + (i % 20000)}` });
    });
    await store.close();
    const sent = N - N / 100 - distinct.length;

    const ro = openSqliteStoreReadOnly({ dataDir });
    expect(await ro.verify()).toMatchObject({ ok: true });
    const loop = [...ro.iterateJson({ host: 'loop.attacker.example' })].map((j) => JSON.parse(j) as DecisionRecord);
    expect(loop.length).toBeLessThan(100);
    expect(loop.reduce((n, r) => n + weightOf(r), 0)).toBe(sent);
    expect(loop.some((r) => (r.detail?.aggregated as { count: number } | undefined)?.count! > 1)).toBe(true);
    const quiet = (await ro.query({ agent: 'quiet', limit: 1000 })).records.map((r) => r.id);
    expect(quiet.sort()).toEqual(others.sort());
    const flood = [...ro.iterateJson({ agent: 'flood' })].map((j) => (JSON.parse(j) as DecisionRecord).host);
    for (const h of distinct) expect(flood).toContain(h);
    const s = await ro.summary({ agent: 'flood' });
    expect(s.totals.deny).toBe(sent + distinct.length);
    expect(s.topDeniedHosts[0]).toEqual({ host: 'loop.attacker.example', count: sent });
    await ro.close();
  });

  it('through the real proxy: an identical CONNECT flood is one counted record per window, other destinations each kept', async () => {
    const dataDir = path.join(t.dir, 'proxy');
    const p = await startTestProxy({ store: { dataDir, maxBytes: 5 * MB } });
    const FLOOD = 1200;
    try {
      for (let i = 0; i < FLOOD; i += 24) {
        const out = await Promise.all(Array.from({ length: 24 }, () => rawExchange(p.port, 'CONNECT loop.blocked.example:443 HTTP/1.1\r\nHost: x\r\n\r\n', 2000)));
        for (const o of out) expect(o).toMatch(/^HTTP\/1\.1 403 /);
      }
      for (let i = 0; i < 10; i++) expect(await rawExchange(p.port, `CONNECT d${i}.blocked.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`, 2000)).toMatch(/^HTTP\/1\.1 403 /);
    } finally {
      await p.close();
    }
    // The JSON-lines side saw every one; the store counts them exactly.
    expect(p.sink.records.filter((r) => r.host === 'loop.blocked.example')).toHaveLength(FLOOD);
    const ro = openSqliteStoreReadOnly({ dataDir });
    const loop = [...ro.iterateJson({ host: 'loop.blocked.example' })].map((j) => JSON.parse(j) as DecisionRecord);
    expect(loop.length).toBeLessThan(FLOOD / 10);
    expect(loop.reduce((n, r) => n + weightOf(r), 0)).toBe(FLOOD);
    expect((await ro.query({ host: 'd*.blocked.example', limit: 100 })).records).toHaveLength(10);
    expect(await ro.verify()).toMatchObject({ ok: true });
    await ro.close();
  }, 120_000);

  it('a store from before (no incremental vacuum, no weight column) is converted once and keeps its chain', async () => {
    const dataDir = path.join(t.dir, 'legacy');
    const old = createSqliteStore({ dataDir, repeats: false });
    for (let i = 0; i < 50; i++) old.write(rec());
    await old.close();
    // Make it look like an older version's file: auto_vacuum NONE and no weight column.
    const db = new Database(old.file);
    db.exec('ALTER TABLE decisions DROP COLUMN weight');
    db.pragma('auto_vacuum = NONE');
    db.exec('VACUUM');
    expect(db.pragma('auto_vacuum', { simple: true })).toBe(0);
    db.close();
    const ro0 = openSqliteStoreReadOnly({ dataDir });
    expect((await ro0.summary({})).totals.allow).toBe(50); // an old file still reads
    await ro0.close();

    const store = createSqliteStore({ dataDir, retention: { maxBytes: 5 * MB } });
    store.write(rec());
    await store.close();
    const after = new Database(old.file, { readonly: true });
    expect(after.pragma('auto_vacuum', { simple: true })).toBe(2);
    after.close();
    const ro = openSqliteStoreReadOnly({ dataDir });
    expect(await ro.verify()).toMatchObject({ ok: true, checked: 51 });
    await ro.close();
  });

  it('verify catches a weight column edited to inflate or hide counts', async () => {
    const dataDir = path.join(t.dir, 'weight');
    const store = createSqliteStore({ dataDir });
    for (let i = 0; i < 5; i++) store.write(rec());
    await store.close();
    const db = new Database(store.file);
    db.prepare('UPDATE decisions SET weight = 1000 WHERE seq = 3').run();
    db.close();
    const ro = openSqliteStoreReadOnly({ dataDir });
    expect(await ro.verify()).toMatchObject({ ok: false, problem: 'altered', seq: 3 });
    await ro.close();
  });
});
