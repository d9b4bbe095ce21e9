import type { DecisionRecord } from '../record.js';
import type { DecisionSink } from '../sink.js';
import type { QueryFilter } from '../query.js';
import type { VerifyResult } from '../chain.js';
import type { Summary } from '../summary.js';

export interface QueryPage {
  /** Newest first. */
  records: DecisionRecord[];
  /** Pass back as `cursor` for the next (older) page; null when this was the last page. */
  nextCursor: string | null;
}

export interface TailPage {
  /** Oldest first (write order), so a follower prints them in the order they were stored. */
  records: DecisionRecord[];
  /** Where to continue from. */
  cursor: string;
}

/** A record's place in the hash chain (docs/decision-log.md). */
export interface ChainPosition {
  seq: number;
  hash: string;
  /** The hash this record was chained to: the row before it, the retention anchor, or the genesis hash. */
  prev: string;
  /** The newest seq in the store (in this record's chain) when asked. */
  headSeq: number;
  /** A store of several replicas: whose chain this is. */
  replica?: string;
}

/** Decisions in one time bucket; `t` is epoch ms at the bucket start. */
export interface TimelineBucket {
  t: number;
  allow: number;
  deny: number;
}

export interface StoreStats {
  /** Records accepted by write() and not yet committed. */
  pending: number;
  /** Records lost because the store failed or the buffer overflowed (since start). */
  dropped: number;
  /** Records committed (since start). */
  written: number;
  /** Age of the oldest pending record in ms; 0 when nothing is pending. */
  lagMs: number;
  /** Whether the last write attempt failed. */
  failing: boolean;
  /** Records deleted by retention (since start). */
  retained: number;
  /** Of `pending`, records in the local spool file (a store that spools). */
  spooled?: number;
  /** The store cannot take records now (failing, or a spool waits to be delivered); the proxy still serves. */
  degraded?: boolean;
}

/**
 * The decision store. Small on purpose: a PostgreSQL store for fleets of proxies implements the same.
 * write()/close() come from DecisionSink (never throw, never block on I/O); the read side is async.
 */
export interface DecisionStore extends DecisionSink {
  query(filter: QueryFilter): Promise<QueryPage>;
  get(id: string): Promise<DecisionRecord | null>;
  summary(filter: QueryFilter): Promise<Summary>;
  chainPosition(id: string): Promise<ChainPosition | null>;
  timeline(filter: QueryFilter, bucketMs: number): Promise<TimelineBucket[]>;
  /** Records stored after `cursor` (null = start at the current head, returning none). */
  tailAfter(cursor: string | null, filter?: QueryFilter, limit?: number): Promise<TailPage>;
  /** Checks every chain in the store; a store of several replicas reports each in `replicas`. */
  verify(opts?: { sinceMs?: number }): Promise<VerifyResult & { replicas?: ReplicaVerifyResult[] }>;
  /** Every matching record's stored JSON, newest first; `limit` 0 or undefined = all (constant memory). */
  iterateJson(f: QueryFilter, limit?: number): Iterable<string> | AsyncIterable<string>;
  stats(): StoreStats;
  /** Called after each committed batch (this process's writes only). */
  onStored(fn: () => void): () => void;
}

/** One replica's chain, as `log verify` reports it. */
export type ReplicaVerifyResult = VerifyResult & { replica: string };

export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
}
