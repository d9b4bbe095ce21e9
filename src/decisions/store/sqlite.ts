import Database from 'better-sqlite3';
import { getDomain } from 'tldts';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { FAILURE_REASONS, weightOf, type DecisionRecord } from '../record.js';
import { DEFAULT_LIMIT, MAX_LIMIT, hostGlobToSqlite, type QueryFilter } from '../query.js';
import { GENESIS_HASH, canonicalRecordJson, chainHash, verifyChain, type ChainRow, type VerifyResult } from '../chain.js';
import type { Summary } from '../summary.js';
import { FlushTimer } from './flush-timer.js';
import { RepeatIntake, type RepeatOptions } from './repeats.js';
import { encodeCursor, decodeCursor, decodeTailCursor, CursorError } from './cursor.js';
import { SqlParams, whereSql, type SqlDialect } from './sql-filter.js';
import { StoreUnavailableError, type ChainPosition, type DecisionStore, type QueryPage, type StoreStats, type TailPage, type TimelineBucket } from './types.js';

export { CursorError };
export const DEFAULT_DB_FILE = 'decisions.sqlite';

/** Anything with pino's error(obj, msg) shape. */
export interface ErrorLogger {
  error(obj: object, msg?: string): void;
  warn?(obj: object, msg?: string): void;
}

export interface SqliteStoreOptions {
  /** Directory holding the database file; created when missing. Default ./data. */
  dataDir?: string;
  fileName?: string;
  /** Flush buffered records at least this often. Default 100 ms. */
  flushIntervalMs?: number;
  /** Flush as soon as this many records are buffered; also the size of one transaction. Default 500. */
  batchSize?: number;
  /** Records kept in memory while the store fails; beyond this new records are dropped. Default 100 000. */
  maxPending?: number;
  /** Wait after a failed open or write before trying again. Default 1000 ms. */
  retryMs?: number;
  busyTimeoutMs?: number;
  /** SQLite page cache of the writing connection, KiB. Default 2048. */
  cacheKiB?: number;
  retention?: {
    maxAgeMs?: number;
    /**
     * Keep the records' pages under this many bytes. Checked after every committed batch, and the
     * excess is deleted at once, oldest first, in one pass sized to it.
     */
    maxBytes?: number;
    /** How often the background retention runs. Default 60 s. */
    intervalMs?: number;
    /** Rows deleted per transaction; small so writers are never held up for long. Default 500. */
    batchRows?: number;
    /** Transactions per run. Default 20. */
    maxBatchesPerRun?: number;
  };
  /** Fold repeated identical denials into one counted record (see repeats.ts); false = store each. */
  repeats?: RepeatOptions | false;
  logger?: ErrorLogger;
  onError?: (err: Error) => void;
}

/** Size retention deletes down to this share of maxBytes, so it does not run again on the next batch. */
const SIZE_TARGET = 0.9;
/** Rows per deleting transaction, so writers (other workers) are never held up for long. */
const SIZE_DELETE_ROWS = 5000;
/** Free pages kept for reuse, as a share of maxBytes; the rest go back to the file system. */
const FREE_RESERVE = 0.1;

interface Pending {
  rec: DecisionRecord;
  at: number;
}

interface Row {
  seq: number;
  id: string;
  time_ms: number;
  verdict: string;
  agent: string | null;
  host: string;
  reason: string;
  rule: string | null;
  json: string;
  hash: string;
  weight?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  verdict TEXT NOT NULL,
  agent TEXT,
  host TEXT NOT NULL,
  reason TEXT NOT NULL,
  rule TEXT,
  json TEXT NOT NULL,
  hash TEXT NOT NULL,
  weight INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS decisions_id ON decisions(id);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time_ms);
CREATE INDEX IF NOT EXISTS decisions_verdict_time ON decisions(verdict, time_ms);
CREATE INDEX IF NOT EXISTS decisions_agent_time ON decisions(agent, time_ms);
-- No host index: host filters are globs (often a leading *) that an index cannot serve, and it cost a
-- third of every insert (docs/performance.md). Host queries scan the time range instead.
DROP INDEX IF EXISTS decisions_host_time;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

/** time column value; a record with an unparseable time still gets stored (and verified) as 0. */
export function timeMsOf(time: string): number {
  const ms = Date.parse(time);
  return Number.isFinite(ms) ? ms : 0;
}

/** SQLite's placeholders and GLOB (a literal `[` escaped as `[[]`: GLOB reads it as a class). */
const SQLITE: SqlDialect = {
  placeholder: () => '?',
  glob: (column, glob, bind) =>
    // Paths live in the record's JSON only: a filter on them scans within the other conditions.
    column === 'path' ? `json_extract(json, '$.path') GLOB ${bind(glob.replace(/\[/g, '[[]'))}` : `host GLOB ${bind(hostGlobToSqlite(glob))}`,
  field: (name) => `json_extract(json, '$.${name}')`,
};

function where(f: QueryFilter, extra: string[] = [], params: unknown[] = []): { sql: string; params: unknown[] } {
  const p = new SqlParams(SQLITE);
  for (const v of params) p.bind(v);
  return whereSql(f, SQLITE, extra.map((e) => () => e), p);
}

/**
 * SQLite decision store. Writes are buffered and committed in batches from a timer, never from the
 * caller of write(). Every batch runs in BEGIN IMMEDIATE and reads the chain head inside it, so
 * several processes can append to one file and the chain stays in commit order.
 */
export class SqliteDecisionStore implements DecisionStore {
  readonly file: string;
  private db: Database.Database | null = null;
  private buffer: Pending[] = [];
  private retentionTimer: NodeJS.Timeout | null = null;
  private retryAt = 0;
  private closed = false;
  private lastErrorReport = 0;
  private listeners = new Set<() => void>();
  private counters = { dropped: 0, written: 0, retained: 0, failing: false };
  private readonly repeats: RepeatIntake | null;
  /** How many decisions a row stands for, in SQL: the weight column, or 1 in a store from before it. */
  private weight = 'weight';
  private readonly o: Required<Omit<SqliteStoreOptions, 'retention' | 'repeats' | 'logger' | 'onError' | 'dataDir' | 'fileName'>>;

  constructor(
    private readonly opts: SqliteStoreOptions & { readonly?: boolean; file?: string },
  ) {
    this.file = opts.file ?? path.resolve(opts.dataDir ?? './data', opts.fileName ?? DEFAULT_DB_FILE);
    this.o = {
      flushIntervalMs: opts.flushIntervalMs ?? 100,
      batchSize: opts.batchSize ?? 500,
      maxPending: opts.maxPending ?? 100_000,
      retryMs: opts.retryMs ?? 1000,
      busyTimeoutMs: opts.busyTimeoutMs ?? 5000,
      cacheKiB: opts.cacheKiB ?? 2048,
    };
    this.repeats = opts.readonly ? null : new RepeatIntake(opts.repeats, (r) => this.enqueue(r));
    if (!opts.readonly && opts.retention && (opts.retention.maxAgeMs || opts.retention.maxBytes)) {
      this.retentionTimer = setInterval(() => this.runRetention(), opts.retention.intervalMs ?? 60_000);
      this.retentionTimer.unref();
    }
  }

  /** Open now (the writer also opens lazily on first flush); throws StoreUnavailableError. */
  open(): Database.Database {
    if (this.db) return this.db;
    try {
      if (this.opts.readonly) {
        const db = new Database(this.file, { readonly: true, fileMustExist: true });
        db.pragma(`busy_timeout = ${this.o.busyTimeoutMs}`);
        const cols = db.pragma('table_info(decisions)') as { name: string }[];
        if (!cols.some((c) => c.name === 'weight')) this.weight = '1';
        this.db = db;
      } else {
        mkdirSync(path.dirname(this.file), { recursive: true });
        const db = new Database(this.file);
        try {
          db.pragma(`busy_timeout = ${this.o.busyTimeoutMs}`);
          // Set before the first table exists, so deleted pages can be handed back (incremental_vacuum).
          const fresh = (db.prepare('SELECT count(*) FROM sqlite_master').pluck().get() as number) === 0;
          if (fresh) db.pragma('auto_vacuum = INCREMENTAL');
          db.pragma('journal_mode = WAL');
          // NORMAL in WAL: a crash loses at most the last commits, never corrupts; FULL would fsync every batch.
          db.pragma('synchronous = NORMAL');
          // better-sqlite3 builds SQLite with a 16 MiB page cache per connection, which a busy proxy fills
          // within seconds (peak RSS). Appends touch only the tail pages of the table and its indexes, and
          // reads are served from the OS page cache as well: 2 MiB (docs/performance.md).
          db.pragma(`cache_size = -${this.o.cacheKiB}`);
          db.exec(SCHEMA);
          const cols = db.pragma('table_info(decisions)') as { name: string }[];
          if (!cols.some((c) => c.name === 'weight')) db.exec('ALTER TABLE decisions ADD COLUMN weight INTEGER NOT NULL DEFAULT 1');
          const maxBytes = this.opts.retention?.maxBytes;
          if (maxBytes) this.boundFiles(db, maxBytes);
        } catch (err) {
          db.close();
          throw err;
        }
        this.db = db;
      }
      return this.db;
    } catch (err) {
      throw new StoreUnavailableError(`decision store ${this.file}: ${(err as Error).message}`, { cause: err });
    }
  }

  // ---- write side (DecisionSink) ----

  write(record: DecisionRecord): void {
    if (this.closed || this.opts.readonly) {
      this.counters.dropped++;
      return;
    }
    this.repeats?.offer(record);
  }

  private enqueue(record: DecisionRecord): void {
    if (this.buffer.length >= this.o.maxPending) {
      this.counters.dropped += weightOf(record);
      this.report(new Error(`decision store ${this.file}: ${this.o.maxPending} records pending, dropping new ones`));
      return;
    }
    this.buffer.push({ rec: record, at: Date.now() });
    if (this.buffer.length >= this.o.batchSize) this.schedule(0);
    else this.schedule(this.o.flushIntervalMs);
  }

  private readonly flusher = new FlushTimer(
    () => {
      this.flush();
      if (this.buffer.length > 0 && !this.closed) this.schedule(this.counters.failing ? this.o.retryMs : 0);
    },
    () => this.retryAt,
  );

  private schedule(delay: number): void {
    this.flusher.schedule(delay);
  }

  /** Commit everything buffered (in batches). Returns false when the store failed; records stay buffered. */
  flush(): boolean {
    while (this.buffer.length > 0) {
      let db: Database.Database;
      try {
        db = this.open();
      } catch (err) {
        return this.failed(err as Error);
      }
      const batch = this.buffer.slice(0, this.o.batchSize);
      const rows: { rec: DecisionRecord; json: string }[] = [];
      for (const p of batch) {
        try {
          rows.push({ rec: p.rec, json: canonicalRecordJson(p.rec) });
        } catch {
          this.counters.dropped++; // unserialisable record (e.g. a BigInt in detail): it can never be stored
        }
      }
      try {
        this.insertTx(db).immediate(rows);
      } catch (err) {
        return this.failed(err as Error);
      }
      this.buffer.splice(0, batch.length);
      this.counters.written += rows.length;
      if (this.counters.failing) this.counters.failing = false;
      this.checkSize();
      for (const fn of this.listeners) {
        try {
          fn();
        } catch {
          /* a listener must not break the writer */
        }
      }
    }
    return true;
  }

  private insertTxCache: ReturnType<Database.Database['transaction']> | null = null;
  private insertTx(db: Database.Database) {
    if (this.insertTxCache) return this.insertTxCache as Database.Transaction<(rows: { rec: DecisionRecord; json: string }[]) => void>;
    const last = db.prepare('SELECT hash FROM decisions ORDER BY seq DESC LIMIT 1').pluck();
    const anchor = db.prepare("SELECT value FROM meta WHERE key = 'anchor_hash'").pluck();
    const insert = db.prepare(
      'INSERT INTO decisions (id, time_ms, verdict, agent, host, reason, rule, json, hash, weight) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const tx = db.transaction((rows: { rec: DecisionRecord; json: string }[]) => {
      let prev = (last.get() as string | undefined) ?? (anchor.get() as string | undefined) ?? GENESIS_HASH;
      for (const { rec, json } of rows) {
        const hash = chainHash(prev, json);
        insert.run(rec.id, timeMsOf(rec.time), rec.verdict, rec.agent ?? null, rec.host, rec.reason, rec.rule ?? null, json, hash, weightOf(rec));
        prev = hash;
      }
    });
    this.insertTxCache = tx;
    return tx;
  }

  private failed(err: Error): false {
    this.counters.failing = true;
    this.retryAt = Date.now() + this.o.retryMs;
    // A broken handle (file replaced, disk gone) is reopened on the next attempt.
    if (this.db && /SQLITE_(?:IOERR|CORRUPT|NOTADB|CANTOPEN|READONLY)/.test((err as { code?: string }).code ?? '')) {
      try {
        this.db.close();
      } catch {
        /* already unusable */
      }
      this.db = null;
      this.insertTxCache = null;
    }
    const overflow = this.buffer.length - this.o.maxPending;
    if (overflow > 0) {
      this.buffer.splice(0, overflow);
      this.counters.dropped += overflow;
    }
    this.report(err);
    return false;
  }

  private report(err: Error): void {
    const now = Date.now();
    if (now - this.lastErrorReport < 10_000) return; // one line per 10 s, not one per record
    this.lastErrorReport = now;
    try {
      this.opts.logger?.error({ err, file: this.file, pending: this.buffer.length, dropped: this.counters.dropped }, 'decision store write failed');
      this.opts.onError?.(err);
    } catch {
      /* reporting must not throw into the proxy */
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flusher.cancel();
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    // Every counted fold is written: a clean shutdown loses no count.
    for (const r of this.repeats?.close() ?? []) this.buffer.push({ rec: r, at: Date.now() });
    if (this.buffer.length > 0 && !this.flush()) {
      // One last try failed: these records are lost, and counted.
      for (const p of this.buffer) this.counters.dropped += weightOf(p.rec);
      this.buffer = [];
    }
    this.listeners.clear();
    try {
      this.db?.close();
    } catch {
      /* closing a broken handle */
    }
    this.db = null;
  }

  stats(): StoreStats {
    return {
      pending: this.buffer.length,
      dropped: this.counters.dropped,
      written: this.counters.written,
      lagMs: this.buffer.length ? Date.now() - this.buffer[0].at : 0,
      failing: this.counters.failing,
      retained: this.counters.retained,
    };
  }

  onStored(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  // ---- retention ----

  /**
   * A small WAL that is truncated after each checkpoint, so the files on disk follow the bound (the WAL
   * would otherwise keep its largest size, and checkpoint only every 1000 pages). A store created before
   * incremental vacuum existed is converted once (VACUUM), so its deleted pages can be handed back.
   */
  private boundFiles(db: Database.Database, maxBytes: number): void {
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const walPages = Math.max(64, Math.min(1000, Math.floor(maxBytes / 16 / pageSize)));
    db.pragma(`wal_autocheckpoint = ${walPages}`);
    db.pragma(`journal_size_limit = ${walPages * pageSize}`);
    if ((db.pragma('auto_vacuum', { simple: true }) as number) === 0) {
      try {
        db.pragma('auto_vacuum = INCREMENTAL');
        db.exec('VACUUM');
        this.opts.logger?.warn?.({ file: this.file }, 'decision store converted to incremental vacuum (one-time VACUUM)');
      } catch (err) {
        // Busy (another writer) or no room for the copy: freed pages are still reused, the file only never shrinks.
        this.report(err as Error);
      }
    }
  }

  /** After every committed batch: three pragmas that read the file header, so a flood never outruns the bound. */
  private checkSize(): void {
    if (!this.opts.retention?.maxBytes) return;
    this.counters.retained += this.retainSize(this.open(), this.opts.retention.maxBytes);
  }

  /** Bytes in use by records and indexes: the file's pages less the free ones (which are reused). */
  private liveBytes(db: Database.Database): number {
    const pages = (db.pragma('page_count', { simple: true }) as number) - (db.pragma('freelist_count', { simple: true }) as number);
    return pages * (db.pragma('page_size', { simple: true }) as number);
  }

  /**
   * Delete from the start of the chain, in one pass sized to the excess (rows x the average row size),
   * down to SIZE_TARGET of the bound; keep the last deleted hash as the anchor; hand free pages beyond
   * a reserve back to the file system.
   */
  private retainSize(db: Database.Database, maxBytes: number): number {
    let deleted = 0;
    try {
      const head = db.prepare('SELECT seq, hash FROM decisions ORDER BY seq LIMIT 1 OFFSET ?');
      const range = db.prepare('SELECT min(seq) AS lo, max(seq) AS hi FROM decisions');
      const del = db.prepare('DELETE FROM decisions WHERE seq <= ?');
      const setMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
      const step = db.transaction((rows: number): number => {
        const r = head.get(rows - 1) as { seq: number; hash: string } | undefined;
        const lo = (range.get() as { lo: number | null }).lo;
        if (!r || lo === null) return 0;
        del.run(r.seq);
        setMeta.run('anchor_hash', r.hash);
        setMeta.run('anchor_seq', String(r.seq));
        return r.seq - lo + 1;
      });
      for (let pass = 0; pass < 4; pass++) {
        const live = this.liveBytes(db);
        if (live <= maxBytes) break;
        const { lo, hi } = range.get() as { lo: number | null; hi: number | null };
        if (lo === null || hi === null) break;
        // Rows are contiguous in seq: only the start of the chain is ever deleted.
        const rows = hi - lo + 1;
        let excess = Math.min(rows, Math.ceil(((live - maxBytes * SIZE_TARGET) / live) * rows));
        while (excess > 0) {
          const n = step.immediate(Math.min(excess, SIZE_DELETE_ROWS));
          if (n === 0) break;
          deleted += n;
          excess -= n;
        }
      }
      if (deleted > 0 && (db.pragma('auto_vacuum', { simple: true }) as number) === 2) {
        const pageSize = db.pragma('page_size', { simple: true }) as number;
        const extra = (db.pragma('freelist_count', { simple: true }) as number) - Math.floor((maxBytes * FREE_RESERVE) / pageSize);
        if (extra > 0) db.pragma(`incremental_vacuum(${extra})`);
      }
    } catch (err) {
      this.report(err as Error);
    }
    return deleted;
  }

  /** Delete old records (by age, then by size) from the start of the chain, keeping the last deleted hash as the anchor. */
  runRetention(now = Date.now()): number {
    const r = this.opts.retention;
    if (!r || this.closed) return 0;
    let deleted = 0;
    try {
      const db = this.open();
      if (r.maxBytes) deleted += this.retainSize(db, r.maxBytes);
      if (r.maxAgeMs) {
        const batchRows = r.batchRows ?? 500;
        const head = db.prepare('SELECT seq, time_ms, hash FROM decisions ORDER BY seq LIMIT ?');
        const del = db.prepare('DELETE FROM decisions WHERE seq <= ?');
        const setMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
        const cutoff = now - r.maxAgeMs;
        const step = db.transaction((): number => {
          const rows = head.all(batchRows) as { seq: number; time_ms: number; hash: string }[];
          let cut = -1;
          while (cut + 1 < rows.length && rows[cut + 1].time_ms < cutoff) cut++;
          if (cut < 0) return 0;
          del.run(rows[cut].seq);
          setMeta.run('anchor_hash', rows[cut].hash);
          setMeta.run('anchor_seq', String(rows[cut].seq));
          return cut + 1;
        });
        for (let i = 0; i < (r.maxBatchesPerRun ?? 20); i++) {
          const n = step.immediate();
          deleted += n;
          if (n === 0) break;
        }
      }
    } catch (err) {
      this.report(err as Error);
    }
    this.counters.retained += deleted;
    return deleted;
  }

  // ---- read side ----

  async query(f: QueryFilter): Promise<QueryPage> {
    const db = this.open();
    const limit = Math.min(f.limit ?? DEFAULT_LIMIT, MAX_LIMIT);
    const q = this.pageSql(f, limit);
    const rows = db.prepare(q.sql).all(...q.params) as { seq: number; time_ms: number; json: string }[];
    const more = rows.length > limit;
    const page = more ? rows.slice(0, limit) : rows;
    const last = page[page.length - 1];
    return {
      records: page.map((r) => JSON.parse(r.json) as DecisionRecord),
      nextCursor: more && last ? encodeCursor(last.time_ms, last.seq) : null,
    };
  }

  /** SQLite's plan for one page of query(): how the indexes serve a filter (tests and docs/performance.md). */
  explainQuery(f: QueryFilter): string[] {
    const q = this.pageSql(f, f.limit ?? DEFAULT_LIMIT);
    return (this.open().prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(...q.params) as { detail: string }[]).map((r) => r.detail);
  }

  private pageSql(f: QueryFilter, limit: number): { sql: string; params: unknown[] } {
    const extra: string[] = [];
    const params: unknown[] = [];
    if (f.cursor) {
      const c = decodeCursor(f.cursor);
      // The leading `time_ms <= ?` is a range the time indexes seek to, so a page deep in a large store
      // starts where the cursor is instead of scanning down from the newest row.
      extra.push('time_ms <= ? AND (time_ms < ? OR seq < ?)');
      params.push(c.timeMs, c.timeMs, c.seq);
    }
    const w = where(f, extra, params);
    return { sql: `SELECT seq, time_ms, json FROM decisions ${w.sql} ORDER BY time_ms DESC, seq DESC LIMIT ?`, params: [...w.params, limit + 1] };
  }

  /**
   * Every matching record's stored JSON, newest first, straight off the SQLite statement: constant memory
   * whatever the store holds, for `log query --limit 0`. `limit` 0 or undefined means all.
   */
  *iterateJson(f: QueryFilter, limit?: number): Generator<string> {
    const w = where(f);
    const stmt = this.open()
      .prepare(`SELECT json FROM decisions ${w.sql} ORDER BY time_ms DESC, seq DESC${limit ? ' LIMIT ?' : ''}`)
      .pluck();
    yield* stmt.iterate(...w.params, ...(limit ? [limit] : [])) as IterableIterator<string>;
  }

  async get(id: string): Promise<DecisionRecord | null> {
    const json = this.open().prepare('SELECT json FROM decisions WHERE id = ? LIMIT 1').pluck().get(id) as string | undefined;
    return json ? (JSON.parse(json) as DecisionRecord) : null;
  }

  /** Where a record sits in the hash chain: its seq, its hash, and the hash it was chained to. */
  async chainPosition(id: string): Promise<ChainPosition | null> {
    const db = this.open();
    return db.transaction((): ChainPosition | null => {
      const row = db.prepare('SELECT seq, hash FROM decisions WHERE id = ? ORDER BY seq LIMIT 1').get(id) as { seq: number; hash: string } | undefined;
      if (!row) return null;
      const before = db.prepare('SELECT hash FROM decisions WHERE seq < ? ORDER BY seq DESC LIMIT 1').pluck().get(row.seq) as string | undefined;
      const anchor = db.prepare("SELECT value FROM meta WHERE key = 'anchor_hash'").pluck().get() as string | undefined;
      const head = db.prepare('SELECT max(seq) FROM decisions').pluck().get() as number;
      return { seq: row.seq, hash: row.hash, prev: before ?? anchor ?? GENESIS_HASH, headSeq: head };
    })();
  }

  /** Allowed and denied decisions per time bucket over [since, until), ascending; empty buckets omitted. */
  async timeline(f: QueryFilter, bucketMs: number): Promise<TimelineBucket[]> {
    const db = this.open();
    const w = where(f);
    const n = this.weight;
    // Written into the SQL, not bound: better-sqlite3 binds numbers as REAL, and a REAL divisor would
    // make the division exact instead of integer, so nothing would fall into a bucket.
    const b = Math.max(1, Math.trunc(bucketMs));
    return db
      .prepare(
        `SELECT (time_ms / ${b}) * ${b} AS t, sum((verdict = 'allow') * ${n}) AS allow, sum((verdict = 'deny') * ${n}) AS deny FROM decisions ${w.sql} GROUP BY t ORDER BY t LIMIT 10000`,
      )
      .all(...w.params) as TimelineBucket[];
  }

  async summary(f: QueryFilter): Promise<Summary> {
    const db = this.open();
    registerDomainFunction(db);
    const w = where(f);
    const wd = where(f, ["verdict = 'deny'"]);
    // Policy denials only: a DNS or upstream failure is not something the policy refused.
    const failures = FAILURE_REASONS.map((r) => `'${r}'`).join(', ');
    const wp = where(f, ["verdict = 'deny'", `reason NOT IN (${failures})`]);
    const we = where(f, [`reason IN (${failures})`]);
    return db.transaction((): Summary => {
      const totals = { allow: 0, deny: 0 };
      const n = `sum(${this.weight})`;
      for (const r of db.prepare(`SELECT verdict, ${n} AS n FROM decisions ${w.sql} GROUP BY verdict`).all(...w.params) as { verdict: string; n: number }[]) {
        if (r.verdict === 'allow' || r.verdict === 'deny') totals[r.verdict] = r.n;
      }
      return {
        sinceMs: f.sinceMs ?? null,
        untilMs: f.untilMs ?? null,
        totals,
        errorsByReason: db.prepare(`SELECT reason, ${n} AS count FROM decisions ${we.sql} GROUP BY reason ORDER BY count DESC, reason`).all(...we.params) as NonNullable<Summary['errorsByReason']>,
        topDeniedHosts: db.prepare(`SELECT host, ${n} AS count FROM decisions ${wp.sql} GROUP BY host ORDER BY count DESC, host LIMIT 10`).all(...wp.params) as Summary['topDeniedHosts'],
        // Grouped in SQLite, so a flood of random subdomains costs one row per domain, not per host.
        topDeniedDomains: db
          .prepare(`SELECT regdomain(host) AS domain, ${n} AS count, count(DISTINCT host) AS hosts FROM decisions ${wp.sql} GROUP BY domain ORDER BY count DESC, domain LIMIT 10`)
          .all(...wp.params) as Summary['topDeniedDomains'],
        topAgents: db
          .prepare(`SELECT agent, ${n} AS count, sum((verdict = 'deny') * ${this.weight}) AS denies FROM decisions ${w.sql} GROUP BY agent ORDER BY count DESC LIMIT 10`)
          .all(...w.params) as Summary['topAgents'],
        deniesByReason: db.prepare(`SELECT reason, ${n} AS count FROM decisions ${wd.sql} GROUP BY reason ORDER BY count DESC, reason`).all(...wd.params) as Summary['deniesByReason'],
        deniesPerMinute: db
          .prepare(`SELECT (time_ms / 60000) * 60000 AS minute, ${n} AS count FROM decisions ${wd.sql} GROUP BY minute ORDER BY minute LIMIT 100000`)
          .all(...wd.params) as Summary['deniesPerMinute'],
      };
    })();
  }

  async tailAfter(cursor: string | null, f: QueryFilter = {}, limit = 500): Promise<TailPage> {
    const db = this.open();
    const head = (db.prepare('SELECT max(seq) FROM decisions').pluck().get() as number | null) ?? 0;
    if (cursor === null) return { records: [], cursor: String(head) };
    const w = where({ ...f, cursor: undefined, limit: undefined }, ['seq > ?', 'seq <= ?'], [decodeTailCursor(cursor), head]);
    const rows = db.prepare(`SELECT seq, json FROM decisions ${w.sql} ORDER BY seq LIMIT ?`).all(...w.params, limit) as { seq: number; json: string }[];
    const next = rows.length === limit ? rows[rows.length - 1].seq : head;
    return { records: rows.map((r) => JSON.parse(r.json) as DecisionRecord), cursor: String(next) };
  }

  async verify(opts: { sinceMs?: number } = {}): Promise<VerifyResult> {
    const db = this.open();
    return db.transaction((): VerifyResult => {
      const meta = (k: string) => db.prepare('SELECT value FROM meta WHERE key = ?').pluck().get(k) as string | undefined;
      let startHash = meta('anchor_hash') ?? GENESIS_HASH;
      const anchorSeq = meta('anchor_seq');
      let startSeq: number | null = anchorSeq !== undefined ? Number(anchorSeq) : 0;
      let fromSeq = 0;
      if (opts.sinceMs !== undefined) {
        const first = db.prepare('SELECT min(seq) FROM decisions WHERE time_ms >= ?').pluck().get(opts.sinceMs) as number | null;
        if (first === null) return { ok: true, checked: 0, firstSeq: null, lastSeq: null, headHash: startHash };
        const before = db.prepare('SELECT seq, hash FROM decisions WHERE seq < ? ORDER BY seq DESC LIMIT 1').get(first) as { seq: number; hash: string } | undefined;
        // Starting mid-chain trusts the row before the first one checked.
        if (before) (startHash = before.hash, startSeq = before.seq);
        fromSeq = first;
      }
      const it = db.prepare('SELECT * FROM decisions WHERE seq >= ? ORDER BY seq').iterate(fromSeq) as IterableIterator<Row>;
      function* rows(): Generator<ChainRow> {
        for (const r of it) {
          yield { seq: r.seq, id: r.id, json: r.json, hash: r.hash, columns: { id: r.id, timeMs: r.time_ms, verdict: r.verdict, agent: r.agent, host: r.host, reason: r.reason, rule: r.rule, weight: r.weight ?? 1 } };
        }
      }
      const gen = rows();
      try {
        return verifyChain(gen, startHash, startSeq);
      } finally {
        gen.return(undefined);
      }
    })();
  }
}

const withDomainFunction = new WeakSet<Database.Database>();

/** regdomain(host): the registrable domain (public suffix list, private suffixes included), else the host. */
function registerDomainFunction(db: Database.Database): void {
  if (withDomainFunction.has(db)) return;
  db.function('regdomain', { deterministic: true }, (host: unknown) =>
    typeof host === 'string' ? (getDomain(host, { allowPrivateDomains: true }) ?? host) : host,
  );
  withDomainFunction.add(db);
}

/** The writer the proxy uses: never throws, even when the directory or file is unusable (it retries). */
export function createSqliteStore(opts: SqliteStoreOptions & { file?: string } = {}): SqliteDecisionStore {
  const store = new SqliteDecisionStore(opts);
  try {
    store.open();
  } catch (err) {
    // Fail soft: the proxy keeps enforcing; writes are retried and counted as dropped if they never land.
    try {
      opts.logger?.error({ err, file: store.file }, 'decision store unavailable; will retry');
      opts.onError?.(err as Error);
    } catch {
      /* never throw into the proxy */
    }
  }
  return store;
}

/** A reader for the CLI: opens the file read-only (works while a proxy writes it); throws StoreUnavailableError. */
export function openSqliteStoreReadOnly(opts: { dataDir?: string; file?: string }): SqliteDecisionStore {
  const store = new SqliteDecisionStore({ ...opts, readonly: true });
  store.open();
  return store;
}
