/**
 * Per-client token buckets. A flood from one address drains only its own bucket, so other clients
 * keep being served. The table is bounded: when full, the least recently seen client is forgotten
 * (a forgotten client starts again with a full bucket, which is the same as never having been seen).
 */
export interface RateLimitOptions {
  perSecond: number;
  burst: number;
  /** Most clients tracked at once. */
  maxClients?: number;
}

interface Bucket {
  tokens: number;
  last: number;
  /** Whether this run of refusals has been reported yet (one record per run, not one per packet). */
  reported: boolean;
}

export type RateVerdict = { ok: true } | { ok: false; report: boolean };

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxClients: number;

  constructor(private readonly opts: RateLimitOptions) {
    if (!(opts.perSecond > 0) || !(opts.burst >= 1)) throw new RangeError('rate limit needs perSecond > 0 and burst >= 1');
    this.maxClients = opts.maxClients ?? 10_000;
  }

  take(client: string, now = performance.now()): RateVerdict {
    let b = this.buckets.get(client);
    if (b) {
      this.buckets.delete(client); // re-insert below: Map order is recency order
      b.tokens = Math.min(this.opts.burst, b.tokens + ((now - b.last) / 1000) * this.opts.perSecond);
      b.last = now;
    } else {
      b = { tokens: this.opts.burst, last: now, reported: false };
      if (this.buckets.size >= this.maxClients) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
    }
    this.buckets.set(client, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.reported = false;
      return { ok: true };
    }
    const report = !b.reported;
    b.reported = true;
    return { ok: false, report };
  }
}
