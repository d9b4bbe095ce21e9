export type { DecisionStore, QueryPage, TailPage, StoreStats, ReplicaVerifyResult } from './types.js';
export { StoreUnavailableError } from './types.js';
export { SqliteDecisionStore, createSqliteStore, openSqliteStoreReadOnly, DEFAULT_DB_FILE, type SqliteStoreOptions, type ErrorLogger } from './sqlite.js';
export { CursorError } from './cursor.js';
export { PostgresDecisionStore, openPostgresReader } from './postgres.js';
export { parseStoreLocation, redactStoreUrl, StoreUrlError, type StoreLocation } from './location.js';
export { createStoreWriter, openStoreReader, locationOf, defaultReplicaName, type StoreFlags } from './open.js';
