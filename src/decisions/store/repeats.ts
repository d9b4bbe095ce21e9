import type { Aggregated, DecisionRecord } from '../record.js';

export interface RepeatOptions {
  /** Length of one counting window per kind of denial. Default 10 s. */
  windowMs?: number;
  /** Identical denials kept verbatim per window; the rest are counted into one record. Default 10. */
  keep?: number;
  /** Kinds of denial tracked at once; the oldest is settled early beyond this. Default 10 000. */
  maxKeys?: number;
}

interface Window {
  start: number;
  seen: number;
  /** The first denial past `keep` in this window, and how many it stands for. */
  folded: DecisionRecord | null;
  count: number;
  last: number;
}

/**
 * Repeated identical denials (same agent, client address, method, destination, path, reason, rule, mode
 * and status) from one agent past a rate become one record with an exact count, so a retry loop cannot
 * fill the store nor push everyone else's records out through retention. Each distinct denial is still
 * stored, and every allow. The JSON-lines log and the metrics see every denial; only the store folds.
 */
export class RepeatFolder {
  private readonly windowMs: number;
  private readonly keep: number;
  private readonly maxKeys: number;
  private readonly windows = new Map<string, Window>();

  constructor(o: RepeatOptions = {}) {
    this.windowMs = o.windowMs ?? 10_000;
    this.keep = o.keep ?? 10;
    this.maxKeys = o.maxKeys ?? 10_000;
  }

  /** Records to store now for this one (none while it is being counted into a fold). */
  offer(rec: DecisionRecord, out: DecisionRecord[]): void {
    if (rec.verdict !== 'deny') {
      out.push(rec);
      return;
    }
    const t = Date.parse(rec.time) || Date.now();
    const key = keyOf(rec);
    let w = this.windows.get(key);
    if (w && t - w.start >= this.windowMs) {
      this.settle(key, w, out);
      w = undefined;
    }
    if (!w) {
      if (this.windows.size >= this.maxKeys) {
        const [oldKey, oldest] = this.windows.entries().next().value as [string, Window];
        this.settle(oldKey, oldest, out);
      }
      w = { start: t, seen: 0, folded: null, count: 0, last: t };
      this.windows.set(key, w);
    }
    w.seen++;
    w.last = Math.max(w.last, t);
    if (w.seen <= this.keep) out.push(rec);
    else if (w.folded === null) (w.folded = rec, w.count = 1);
    else w.count++;
  }

  /** Settle every window that ended before `now` (all of them with `now` = Infinity, on close). */
  drain(now: number, out: DecisionRecord[]): void {
    for (const [key, w] of this.windows) if (now - w.start >= this.windowMs) this.settle(key, w, out);
  }

  get size(): number {
    return this.windows.size;
  }

  private settle(key: string, w: Window, out: DecisionRecord[]): void {
    this.windows.delete(key);
    if (!w.folded) return;
    if (w.count === 1) {
      out.push(w.folded);
      return;
    }
    const aggregated: Aggregated = { count: w.count, until: new Date(w.last).toISOString() };
    out.push({ ...w.folded, detail: { ...w.folded.detail, aggregated } });
  }
}

function keyOf(r: DecisionRecord): string {
  // The client's port changes with every connection; its address does not.
  const client = r.client.replace(/:\d+$/, '');
  return JSON.stringify([r.agent, client, r.method, r.host, r.port, r.path, r.reason, r.rule, r.mode, r.status]);
}

/**
 * The front of every store writer: repeated identical denials folded, everything else handed to `enqueue`
 * in order; counted folds settled every second (so a fold whose window ended is written even when nothing
 * else arrives) and all of them on close, so a clean shutdown loses no count.
 */
export class RepeatIntake {
  private readonly folder: RepeatFolder | null;
  private readonly timer: NodeJS.Timeout | null = null;

  constructor(
    opts: RepeatOptions | false | undefined,
    private readonly enqueue: (r: DecisionRecord) => void,
    now: () => number = Date.now,
  ) {
    this.folder = opts === false ? null : new RepeatFolder(opts || {});
    if (this.folder) {
      this.timer = setInterval(() => this.settle(now()), 1000);
      this.timer.unref();
    }
  }

  offer(rec: DecisionRecord): void {
    // Only denials fold: every other record goes straight through, without a list per record.
    if (!this.folder || rec.verdict !== 'deny') return this.enqueue(rec);
    const out: DecisionRecord[] = [];
    this.folder.offer(rec, out);
    for (const r of out) this.enqueue(r);
  }

  private settle(now: number): void {
    if (!this.folder || this.folder.size === 0) return;
    const out: DecisionRecord[] = [];
    this.folder.drain(now, out);
    for (const r of out) this.enqueue(r);
  }

  /** Stop the timer and return every fold still counting. */
  close(): DecisionRecord[] {
    if (this.timer) clearInterval(this.timer);
    const out: DecisionRecord[] = [];
    this.folder?.drain(Infinity, out);
    return out;
  }
}
