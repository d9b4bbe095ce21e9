import { promises as fsp, existsSync, readFileSync, truncateSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DecisionRecord } from '../record.js';

/** A record waiting for the store, with the time the writer accepted it (its partition key, fixed once). */
export interface Queued {
  rec: DecisionRecord;
  storedMs: number;
  /** When it was accepted (ms), for the lag gauge. */
  at: number;
}

/**
 * The on-disk overflow of a writer whose store is away: JSON lines appended in order, each batch fsynced
 * (a batch is thousands of records, so that is a few fsyncs per outage, not one per record), delivered
 * oldest first. How far delivery got is kept in `<file>.pos`; a crash between a delivered batch and that
 * write delivers the batch again, which the store's idempotent insert ignores.
 */
export class Spool {
  private pos = 0;
  private size = 0;
  private lines = 0;
  private writing: Promise<void> = Promise.resolve();
  private lastStored = 0;

  constructor(readonly file: string) {
    if (!existsSync(file)) return;
    const all = readFileSync(file);
    // A crash in the middle of an append leaves a torn last line: cut it, so the next append starts clean.
    const whole = all.lastIndexOf(10) + 1;
    if (whole < all.length) truncateSync(file, whole);
    this.size = whole;
    try {
      this.pos = Math.min(this.size, Number(readFileSync(`${file}.pos`, 'utf8').trim()) || 0);
    } catch {
      this.pos = 0;
    }
    // Count what is left (and the newest accepted time, so a restarted writer never goes back in time).
    const rest = all.subarray(this.pos, whole).toString('utf8');
    for (const line of rest.split('\n')) {
      if (!line) continue;
      this.lines++;
      const m = /^\{"t":(\d+)/.exec(line);
      if (m) this.lastStored = Math.max(this.lastStored, Number(m[1]));
    }
  }

  /** Records on disk not yet delivered (including appends still being written). */
  get count(): number {
    return this.lines;
  }

  /** Newest acceptance time on disk (0 when empty). */
  get newestStoredMs(): number {
    return this.lastStored;
  }

  /** Counted at once, so the writer never takes newer records from memory ahead of these. */
  append(items: Queued[]): Promise<void> {
    if (!items.length) return this.writing;
    this.lines += items.length;
    let text = '';
    for (const q of items) {
      text += `{"t":${q.storedMs},"r":${JSON.stringify(q.rec)}}\n`;
      if (q.storedMs > this.lastStored) this.lastStored = q.storedMs;
    }
    const buf = Buffer.from(text);
    const p = this.writing.then(async () => {
      // A PostgreSQL store never touches the data dir until an outage, so it may not exist yet.
      await fsp.mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
      const fh = await fsp.open(this.file, 'a', 0o600);
      try {
        await fh.write(buf);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      this.size += buf.length;
    });
    // A failed append is reported by the caller; later appends still run.
    this.writing = p.catch(() => undefined);
    return p.catch((err) => {
      this.lines -= items.length;
      throw err;
    });
  }

  /** Up to `max` of the oldest undelivered records, and the position to commit once they are stored. */
  async read(max: number): Promise<{ items: Queued[]; end: number }> {
    await this.writing;
    const items: Queued[] = [];
    const limit = this.size;
    let consumed = this.pos;
    if (consumed >= limit) return { items, end: consumed };
    const fh = await fsp.open(this.file, 'r');
    try {
      const chunk = Buffer.alloc(1 << 20);
      let carry = Buffer.alloc(0);
      let at = consumed;
      while (items.length < max && at < limit) {
        const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, limit - at), at);
        if (bytesRead === 0) break;
        const bufStart = at - carry.length;
        at += bytesRead;
        const buf = carry.length ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
        let start = 0;
        let nl: number;
        while (items.length < max && (nl = buf.indexOf(10, start)) >= 0) {
          const line = buf.subarray(start, nl).toString('utf8');
          start = nl + 1;
          consumed = bufStart + start;
          try {
            const o = JSON.parse(line) as { t: number; r: DecisionRecord };
            items.push({ rec: o.r, storedMs: o.t, at: Date.now() });
          } catch {
            this.lines--; // cannot be parsed, so can never be delivered
          }
        }
        carry = Buffer.from(buf.subarray(start));
      }
      // Nothing deliverable is left on disk (the count was off): say so, or the writer would ask forever.
      if (items.length === 0 && consumed >= limit) this.lines = 0;
      return { items, end: consumed };
    } finally {
      await fh.close();
    }
  }

  /** The records up to `end` are stored: remember it; an emptied spool is removed. */
  async commit(end: number, delivered: number): Promise<void> {
    await this.writing;
    this.pos = end;
    this.lines = Math.max(0, this.lines - delivered);
    if (this.pos >= this.size && this.lines === 0) {
      for (const f of [this.file, `${this.file}.pos`]) {
        try {
          unlinkSync(f);
        } catch {
          /* already gone */
        }
      }
      this.pos = 0;
      this.size = 0;
      return;
    }
    await fsp.writeFile(`${this.file}.pos`, String(this.pos), { mode: 0o600 });
  }
}
