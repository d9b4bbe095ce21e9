export type { DecisionStore, QueryPage, TailPage, StoreStats, ReplicaVerifyResult } from './types.js';
export { StoreUnavailableError } from './types.js';
export { SqliteDecisionStore, createSqliteStore, openSqliteStoreReadOnly, DEFAULT_DB_FILE, type SqliteStoreOptions, type ErrorLogger } from './sqlite.js';
export { CursorError } from './cursor.js';
// The PostgreSQL store (./postgres.js) is loaded on demand by open.ts, so SQLite users never load its driver.
export { parseStoreLocation, redactStoreUrl, StoreUrlError, type StoreLocation } from './location.js';
export { createStoreWriter, openStoreReader, openStoreForAdmin, isFleetStore, locationOf, defaultReplicaName, type StoreFlags } from './open.js';
