import path from 'node:path';
import { weightOf, type DecisionRecord } from '../record.js';
import { GENESIS_HASH, canonicalRecordJson, chainHash } from '../chain.js';
import { FlushTimer } from './flush-timer.js';
import { RepeatIntake, type RepeatOptions } from './repeats.js';
import { Spool, type Queued } from './spool.js';
import type { StoreStats } from './types.js';

/** A record with its place in its replica's chain, as a backend stores it. */
export interface SealedRow {
  rec: DecisionRecord;
  json: string;
  replica: string;
  seq: number;
  hash: string;
  /** Partition key; with the record id, what makes the insert idempotent. */
  storedMs: number;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

/**
 * What a backend does for the writer. Every method may throw (the store is away); the writer retries.
 * A third backend implements these four and the read side (DecisionStore), nothing else.
 */
export interface ChainBackend {
  /** Where `replica`'s chain ends in the store ({0, GENESIS} for a new replica). */
  head(replica: string): Promise<ChainHead>;
  /**
   * Insert the rows in one transaction. When some ids (with their storedMs) are already stored, insert
   * nothing and return those ids: the writer drops them, reloads the head and seals the rest again.
   */
  append(rows: SealedRow[]): Promise<Set<string>>;
  /** Partitions ahead, retention; `maxAgeMs` undefined = keep everything. Returns records dropped. */
  maintain(now: number, maxAgeMs: number | undefined): Promise<number>;
  close(): Promise<void>;
}

export interface WriterLogger {
  error(obj: object, msg?: string): void;
  warn?(obj: object, msg?: string): void;
  info?(obj: object, msg?: string): void;
}

export interface ChainWriterOptions {
  replica: string;
  /** Where the spool file goes (created when needed). */
  dataDir: string;
  flushIntervalMs?: number;
  batchSize?: number;
  /** Records held in memory while the store is away or slow; beyond, they go to the spool file. */
  maxMemory?: number;
  /** First wait after a failure; doubles up to retryMaxMs. */
  retryMs?: number;
  retryMaxMs?: number;
  retention?: { maxAgeMs?: number; intervalMs?: number };
  repeats?: RepeatOptions | false;
  /** How long close() keeps trying to deliver before spooling the rest. Default 5 s. */
  closeTimeoutMs?: number;
  logger?: WriterLogger;
  /** Masks secrets (the store password) in anything the writer logs. */
  scrub?: (text: string) => string;
  /** Shown in log lines: the store's redacted URL. */
  display: string;
  now?: () => number;
}

interface Inflight {
  items: (Queued & { json?: string })[];
  /** Spool position to commit once stored; null when the batch came from memory. */
  spoolEnd: number | null;
}

/** A replica name as a file name: anything unusual becomes `_`. */
export function spoolFileFor(dataDir: string, replica: string): string {
  return path.resolve(dataDir, `store-spool-${replica.replace(/[^A-Za-z0-9._-]/g, '_')}.jsonl`);
}

/**
 * The one writer over any backend: folds repeated denials, batches, seals each record into its replica's
 * hash chain, retries, keeps records in memory up to a bound and spools the rest to a local file while
 * the store is away, and delivers oldest first (spool, then memory) when it is back. write() never
 * waits on anything.
 */
export class ChainWriter {
  private memory: Queued[] = [];
  private inflight: Inflight | null = null;
  private head: ChainHead | null = null;
  private readonly spool: Spool;
  private readonly repeats: RepeatIntake;
  private timers: NodeJS.Timeout[] = [];
  private pumping: Promise<void> | null = null;
  private maintaining: Promise<void> = Promise.resolve();
  private retryAt = 0;
  private retryDelay: number;
  private lastStored = 0;
  private closed = false;
  private stopping = false;
  private lastReport = 0;
  private listeners = new Set<() => void>();
  private counters = { dropped: 0, written: 0, retained: 0, failing: false };
  private readonly o: Required<Pick<ChainWriterOptions, 'flushIntervalMs' | 'batchSize' | 'maxMemory' | 'retryMs' | 'retryMaxMs' | 'closeTimeoutMs'>>;
  private readonly now: () => number;

  constructor(
    private readonly backend: ChainBackend,
    private readonly opts: ChainWriterOptions,
  ) {
    this.o = {
      flushIntervalMs: opts.flushIntervalMs ?? 100,
      batchSize: opts.batchSize ?? 500,
      maxMemory: opts.maxMemory ?? 50_000,
      retryMs: opts.retryMs ?? 500,
      retryMaxMs: opts.retryMaxMs ?? 5_000,
      closeTimeoutMs: opts.closeTimeoutMs ?? 5_000,
    };
    this.now = opts.now ?? Date.now;
    this.retryDelay = this.o.retryMs;
    this.spool = new Spool(spoolFileFor(opts.dataDir, opts.replica));
    this.lastStored = this.spool.newestStoredMs;
    if (this.spool.count) opts.logger?.warn?.({ spool: this.spool.file, records: this.spool.count }, 'decision store: delivering records spooled by an earlier run');
    this.repeats = new RepeatIntake(opts.repeats, (r) => this.enqueue(r), this.now);
    const r = opts.retention;
    this.every(r?.intervalMs ?? 60_000, () => void this.maintain());
    void this.maintain();
    if (this.spool.count) this.schedule(0);
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  // ---- accepting ----

  write(record: DecisionRecord): void {
    if (this.closed) {
      this.counters.dropped += weightOf(record);
      return;
    }
    this.repeats.offer(record);
  }

  private enqueue(rec: DecisionRecord): void {
    this.accept(rec);
    if (this.memory.length >= this.o.maxMemory) this.spill();
    if (this.memory.length >= this.o.batchSize) this.schedule(0);
    else this.schedule(this.o.flushIntervalMs);
  }

  /** Stamped with this replica and its acceptance time, which stays with it through retries and the spool. */
  private accept(rec: DecisionRecord): void {
    const now = this.now();
    // Monotonic per replica, and never before the decision: retention (by this time) then always cuts a
    // prefix of every chain, and a `since` filter on the decision time may prune partitions by it.
    const t = Date.parse(rec.time);
    this.lastStored = Math.max(this.lastStored, now, Number.isFinite(t) ? t : 0);
    const stamped = rec.replica === undefined ? { ...rec, replica: this.opts.replica } : rec;
    this.memory.push({ rec: stamped, storedMs: this.lastStored, at: now });
  }

  /** Memory is full: its records go to the end of the spool (behind whatever is already there). */
  private spill(): void {
    const items = this.memory;
    this.memory = [];
    this.spool.append(items).catch((err: Error) => {
      // Disk full or read-only: these records are lost, and counted.
      for (const q of items) this.counters.dropped += weightOf(q.rec);
      this.report(err, 'decision store spool write failed; records dropped');
    });
  }

  // ---- delivering ----

  private readonly flusher = new FlushTimer(
    () => void this.pump(),
    () => this.retryAt,
  );

  private schedule(delay: number): void {
    if (!this.stopping) this.flusher.schedule(delay);
  }

  /** Deliver until nothing waits or the store fails. One at a time. */
  pump(): Promise<void> {
    this.pumping ??= this.deliverAll().finally(() => {
      this.pumping = null;
    });
    return this.pumping;
  }

  private async deliverAll(): Promise<void> {
    while (true) {
      if (!this.inflight) {
        if (this.spool.count > 0) {
          const r = await this.spool.read(this.o.batchSize);
          this.inflight = { items: r.items, spoolEnd: r.end };
        } else if (this.memory.length > 0) {
          this.inflight = { items: this.memory.splice(0, this.o.batchSize), spoolEnd: null };
        } else return;
      }
      const batch = this.inflight;
      try {
        await this.deliver(batch.items);
        if (batch.spoolEnd !== null) await this.spool.commit(batch.spoolEnd, batch.items.length);
      } catch (err) {
        this.failed(err as Error);
        return;
      }
      this.inflight = null;
      this.counters.written += batch.items.length;
      if (this.counters.failing) {
        this.counters.failing = false;
        this.opts.logger?.info?.({ store: this.opts.display }, 'decision store reachable again');
      }
      this.retryDelay = this.o.retryMs;
      for (const fn of this.listeners) {
        try {
          fn();
        } catch {
          /* a listener must not break the writer */
        }
      }
    }
  }

  /** Seal and insert; rows the store already holds (a batch stored before a lost answer) are dropped. */
  private async deliver(items: Inflight['items']): Promise<void> {
    for (let attempt = 0; items.length > 0; attempt++) {
      if (attempt > 3) throw new Error('decision store keeps reporting stored ids for fresh rows');
      this.head ??= await this.backend.head(this.opts.replica);
      let { seq, hash } = this.head;
      const rows: SealedRow[] = [];
      for (const q of items) {
        try {
          q.json ??= canonicalRecordJson(q.rec);
        } catch {
          continue; // unserialisable (a BigInt in detail): it can never be stored
        }
        hash = chainHash(hash, q.json);
        rows.push({ rec: q.rec, json: q.json, replica: this.opts.replica, seq: ++seq, hash, storedMs: q.storedMs });
      }
      this.counters.dropped += items.length - rows.length;
      if (!rows.length) return;
      const stored = await this.backend.append(rows);
      if (stored.size === 0) {
        this.head = { seq, hash };
        return;
      }
      items = items.filter((q) => !stored.has(q.rec.id));
      this.head = null;
    }
  }

  private failed(err: Error): void {
    this.counters.failing = true;
    // The head is read again: a batch whose commit answer was lost may be stored after all.
    this.head = null;
    this.retryAt = Date.now() + this.retryDelay;
    this.retryDelay = Math.min(this.o.retryMaxMs, this.retryDelay * 2);
    this.report(err, 'decision store write failed; records wait in memory, then in the spool file');
    if (!this.stopping) this.schedule(this.retryDelay);
  }

  private report(err: Error, msg: string): void {
    const now = Date.now();
    if (now - this.lastReport < 10_000) return; // one line per 10 s, not one per batch
    this.lastReport = now;
    const scrub = this.opts.scrub ?? ((s: string) => s);
    try {
      this.opts.logger?.error({ err: { name: err.name, message: scrub(err.message), code: (err as { code?: string }).code }, store: this.opts.display, ...this.waiting() }, msg);
    } catch {
      /* reporting must not throw into the proxy */
    }
  }

  /** One run at a time: a run asked for while one is going waits for it, then runs. */
  private maintain(): Promise<void> {
    this.maintaining = this.maintaining.then(() => this.maintainOnce());
    return this.maintaining;
  }

  private async maintainOnce(): Promise<void> {
    if (this.closed) return;
    try {
      this.counters.retained += await this.backend.maintain(this.now(), this.opts.retention?.maxAgeMs);
    } catch (err) {
      this.report(err as Error, 'decision store maintenance (partitions, retention) failed; will retry');
    }
  }

  /** Run retention now (tests, and the first run after start). */
  runMaintenance(): Promise<void> {
    return this.maintain();
  }

  // ---- shutdown ----

  /**
   * Fold what is counted, try to deliver everything for closeTimeoutMs, then spool what is left (the
   * batch in flight first, so the order holds) and fsync it. The next start delivers the spool.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    // Straight to memory (enqueue could spill): the spool at the end takes whatever is left.
    for (const r of this.repeats.close()) this.accept(r);
    const deadline = Date.now() + this.o.closeTimeoutMs;
    while (this.waitingCount() > 0 && Date.now() < deadline) {
      if (this.pumping) await this.pumping;
      const wait = this.retryAt - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, deadline - Date.now())));
      if (Date.now() >= deadline) break;
      await this.pump();
    }
    this.stopping = true;
    this.flusher.cancel();
    if (this.pumping) await this.pumping;
    const left: Queued[] = [];
    if (this.inflight && this.inflight.spoolEnd === null) left.push(...this.inflight.items);
    left.push(...this.memory);
    this.memory = [];
    this.inflight = null;
    if (left.length) {
      try {
        await this.spool.append(left);
        this.opts.logger?.warn?.({ store: this.opts.display, spool: this.spool.file, records: this.spool.count }, 'decision store unreachable at shutdown: records spooled for the next start');
      } catch (err) {
        for (const q of left) this.counters.dropped += weightOf(q.rec);
        this.report(err as Error, 'decision store spool write failed at shutdown; records lost');
      }
    }
    this.listeners.clear();
    await this.backend.close().catch(() => undefined);
  }

  // ---- state ----

  private waitingCount(): number {
    return this.memory.length + (this.inflight && this.inflight.spoolEnd === null ? this.inflight.items.length : 0) + this.spool.count;
  }

  private waiting(): { pending: number; spooled: number } {
    return { pending: this.waitingCount(), spooled: this.spool.count };
  }

  stats(): StoreStats {
    const oldest = this.inflight?.items[0]?.at ?? this.memory[0]?.at;
    const w = this.waiting();
    return {
      pending: w.pending,
      spooled: w.spooled,
      dropped: this.counters.dropped,
      written: this.counters.written,
      lagMs: oldest !== undefined ? Date.now() - oldest : 0,
      failing: this.counters.failing,
      degraded: this.counters.failing || w.spooled > 0,
      retained: this.counters.retained,
    };
  }

  onStored(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

export { GENESIS_HASH };
