import type { Answer } from 'dns-packet';

/** What the upstream said about one (name, type, class), before any per-agent filtering. */
export interface UpstreamAnswer {
  rcode: number;
  answers: Answer[];
  /** Only SOA records are kept: they carry the negative-caching TTL; NS/glue would leak addresses. */
  authorities: Answer[];
}

interface Entry {
  value: UpstreamAnswer;
  stored: number;
  expires: number;
}

export interface CacheOptions {
  maxEntries: number;
  /** Positive answers are kept at most this long even if the upstream says longer. */
  maxTtlSec?: number;
  /** NXDOMAIN / empty answers are kept at most this long. */
  maxNegativeTtlSec?: number;
}

/**
 * A bounded TTL cache of upstream answers keyed by (qname, qtype, class). Unfiltered answers are
 * stored, because filtering depends on the asking agent and the current policy, and is cheap.
 * Eviction is least-recently-used; TTLs in served answers count down from when they were stored.
 */
export class DnsCache {
  private readonly map = new Map<string, Entry>();
  private readonly maxTtl: number;
  private readonly maxNegTtl: number;

  constructor(private readonly opts: CacheOptions) {
    this.maxTtl = opts.maxTtlSec ?? 300;
    this.maxNegTtl = opts.maxNegativeTtlSec ?? 60;
  }

  static key(qname: string, qtype: string, qclass: string): string {
    return `${qname}\u0000${qtype}\u0000${qclass}`;
  }

  get(key: string, now = Date.now()): UpstreamAnswer | null {
    const e = this.map.get(key);
    if (!e) return null;
    this.map.delete(key);
    if (e.expires <= now) return null;
    this.map.set(key, e);
    const elapsed = Math.floor((now - e.stored) / 1000);
    const age = (rs: Answer[]): Answer[] =>
      rs.map((r) => ('ttl' in r && typeof r.ttl === 'number' ? { ...r, ttl: Math.max(0, r.ttl - elapsed) } : r)) as Answer[];
    return { rcode: e.value.rcode, answers: age(e.value.answers), authorities: age(e.value.authorities) };
  }

  set(key: string, value: UpstreamAnswer, now = Date.now()): void {
    if (this.opts.maxEntries <= 0) return;
    const ttl = this.ttlOf(value);
    if (ttl <= 0) return;
    this.map.delete(key);
    while (this.map.size >= this.opts.maxEntries) {
      const oldest = this.map.keys().next().value;
      if (oldest === undefined) break;
      this.map.delete(oldest);
    }
    this.map.set(key, { value, stored: now, expires: now + ttl * 1000 });
  }

  get size(): number {
    return this.map.size;
  }

  /** Seconds to keep an answer: the smallest TTL in it, capped; 0 = do not cache. */
  private ttlOf(v: UpstreamAnswer): number {
    const ttls = (rs: Answer[]): number[] =>
      rs.flatMap((r) => ('ttl' in r && typeof r.ttl === 'number' ? [r.ttl] : []));
    if (v.rcode === 0 && v.answers.length > 0) {
      const t = ttls(v.answers);
      return t.length === 0 ? 0 : Math.min(this.maxTtl, ...t);
    }
    if (v.rcode === 0 || v.rcode === 3) {
      // RFC 2308: negative answers live for min(SOA TTL, SOA MINIMUM); without an SOA, not at all.
      let best = 0;
      for (const r of v.authorities) {
        if (r.type === 'SOA') {
          const min = Math.min(r.ttl ?? 0, r.data.minimum ?? 0);
          best = Math.max(best, min);
        }
      }
      return Math.min(this.maxNegTtl, best);
    }
    return 0; // SERVFAIL and friends are transient; never remember them
  }
}
