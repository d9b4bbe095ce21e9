import { hostname } from 'node:os';
import { parseStoreLocation, type StoreLocation } from './location.js';
import type { PostgresDecisionStore } from './postgres.js';
import { createSqliteStore, openSqliteStoreReadOnly } from './sqlite.js';
import type { DecisionStore } from './types.js';
import type { WriterLogger } from './writer.js';

/** What `--store`, `--store-password-file` and `--data-dir` say, as every command receives them. */
export interface StoreFlags {
  store?: string;
  storePasswordFile?: string;
  dataDir?: string;
}

export function locationOf(o: StoreFlags): StoreLocation {
  return parseStoreLocation(o.store, o.dataDir ?? './data', o.storePasswordFile);
}

/** A reader for the CLI: read-only SQLite, or the shared PostgreSQL database (every replica). */
export async function openStoreReader(o: StoreFlags): Promise<DecisionStore> {
  const loc = locationOf(o);
  if (loc.kind === 'sqlite') return openSqliteStoreReadOnly({ file: loc.file });
  // Loaded only when asked for: a SQLite user never pays for the PostgreSQL driver at start-up.
  const { openPostgresReader } = await import('./postgres.js');
  return openPostgresReader(loc);
}

export interface StoreWriterOptions {
  /** Default: the SQLite file in dataDir. */
  location?: StoreLocation;
  dataDir: string;
  replica?: string;
  retentionMs?: number;
  maxBytes?: number;
  logger?: WriterLogger & { warn(obj: object, msg?: string): void };
  /** PostgreSQL: records held in memory during an outage before they go to the spool file. */
  maxMemory?: number;
}

/** The default replica name: the host name (a pod's name in Kubernetes). */
export function defaultReplicaName(): string {
  return hostname();
}

/** The store `serve` writes (never throws for an unreachable store: it retries, spools, counts). */
export async function createStoreWriter(o: StoreWriterOptions): Promise<DecisionStore> {
  const loc = o.location ?? parseStoreLocation(undefined, o.dataDir);
  if (loc.kind === 'sqlite') {
    return createSqliteStore({ file: loc.file, dataDir: o.dataDir, retention: { maxAgeMs: o.retentionMs, maxBytes: o.maxBytes }, logger: o.logger });
  }
  const { PostgresDecisionStore } = await import('./postgres.js');
  return new PostgresDecisionStore(loc, {
    writer: { replica: o.replica ?? defaultReplicaName(), dataDir: o.dataDir, retention: { maxAgeMs: o.retentionMs }, maxMemory: o.maxMemory },
    logger: o.logger,
  });
}

/** The primary of `serve --workers` only reads (its admin API): the SQLite file, or the shared database. */
export async function openStoreForAdmin(o: StoreWriterOptions): Promise<DecisionStore> {
  const loc = o.location ?? parseStoreLocation(undefined, o.dataDir);
  if (loc.kind === 'sqlite') return createSqliteStore({ file: loc.file, dataDir: o.dataDir, logger: o.logger });
  const { PostgresDecisionStore } = await import('./postgres.js');
  return new PostgresDecisionStore(loc, { logger: o.logger });
}

/** A store shared by a fleet: its alerting runs on the replica holding the lock. */
export function isFleetStore(s: DecisionStore): s is PostgresDecisionStore {
  return typeof (s as Partial<PostgresDecisionStore>).holdsLead === 'function';
}
