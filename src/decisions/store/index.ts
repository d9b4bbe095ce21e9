export type { DecisionStore, QueryPage, TailPage, StoreStats } from './types.js';
export { StoreUnavailableError } from './types.js';
export { SqliteDecisionStore, createSqliteStore, openSqliteStoreReadOnly, CursorError, DEFAULT_DB_FILE, type SqliteStoreOptions, type ErrorLogger } from './sqlite.js';
