import { InvalidArgumentError, Option } from 'commander';
import { parseStoreLocation, StoreUrlError, type StoreLocation } from '../decisions/store/location.js';
import { defaultReplicaName } from '../decisions/store/open.js';

/** `--store`: which store to write (serve) or read (log, policy suggest); one flag and variable for all. */
export function storeOption(): Option {
  return new Option(
    '--store <url>',
    'the decision store: sqlite:PATH or postgres://user@host:5432/db[?sslmode=require] (password from PGPASSWORD, PGPASSFILE or --store-password-file, never in a log line); default: the SQLite file in --data-dir',
  ).env('AGENT_EGRESS_STORE');
}

export function storePasswordFileOption(): Option {
  return new Option('--store-password-file <file>', "a file whose first line is the PostgreSQL store's password (e.g. a mounted Secret)").env('AGENT_EGRESS_STORE_PASSWORD_FILE');
}

export function replicaNameOption(): Option {
  return new Option('--replica-name <name>', 'this replica in a shared store: stamped on every record, one hash chain per name; must be unique in the fleet (default: the host name)')
    .env('AGENT_EGRESS_REPLICA_NAME')
    .default(defaultReplicaName(), 'the host name');
}

export function storeQueueOption(): Option {
  return new Option('--store-queue <n>', 'PostgreSQL store: records held in memory while the database is away or slow; beyond, they go to a spool file in --data-dir')
    .env('AGENT_EGRESS_STORE_QUEUE')
    .argParser((v) => {
      if (!/^\d{1,9}$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('expected a positive number of records');
      return Number(v);
    })
    .default(50_000);
}

export interface ServeStoreConfig {
  location: StoreLocation;
  replica: string;
  maxMemory?: number;
}

/** serve's store flags, checked: a bad one is one line and exit 2 (StoreUrlError). */
export function serveStoreConfig(o: { store?: string | boolean; storePasswordFile?: string; dataDir: string; replicaName?: string; retentionSize?: number; storeQueue?: number }): ServeStoreConfig {
  const location = parseStoreLocation(typeof o.store === 'string' ? o.store : undefined, o.dataDir, o.storePasswordFile);
  if (location.kind === 'postgres' && o.retentionSize !== undefined) {
    throw new StoreUrlError('--retention-size applies to the SQLite store; a PostgreSQL store keeps whole days (--retention)');
  }
  const replica = o.replicaName ?? defaultReplicaName();
  if (!/^[\w.:@-]{1,128}$/.test(replica)) throw new StoreUrlError(`--replica-name: 1-128 letters, digits and . _ - : @, got ${JSON.stringify(replica)}`);
  return { location, replica, maxMemory: o.storeQueue };
}
