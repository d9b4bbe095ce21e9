import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Where the decision store lives, as `--store` names it. */
export type StoreLocation =
  | { kind: 'sqlite'; file: string; display: string }
  | {
      kind: 'postgres';
      /** The connection string as given (may hold a password: never print it, print `display`). */
      url: string;
      /** The URL with any password replaced by `***`: the only form that reaches a log line or an error. */
      display: string;
      /** Read from --store-password-file; else the driver's own PGPASSWORD / PGPASSFILE. */
      password?: string;
    };

export class StoreUrlError extends Error {
  override name = 'StoreUrlError';
}

export const DEFAULT_SQLITE_FILE = 'decisions.sqlite';

/** The URL with its password (userinfo after the colon, or a `password=` parameter) masked. */
export function redactStoreUrl(text: string): string {
  return text
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*):[^@/?#]*@/i, '$1:***@')
    .replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/**
 * `sqlite:PATH` (relative to the working directory), `postgres://` or `postgresql://`; undefined means the
 * SQLite file in `dataDir`, as before --store existed. A password file's first line is the password.
 */
export function parseStoreLocation(text: string | undefined, dataDir: string, passwordFile?: string): StoreLocation {
  if (text === undefined || text === '') {
    const file = path.resolve(dataDir, DEFAULT_SQLITE_FILE);
    return { kind: 'sqlite', file, display: `sqlite:${file}` };
  }
  if (/^sqlite:/i.test(text)) {
    const p = text.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!p) throw new StoreUrlError('--store sqlite: needs a path, e.g. sqlite:./data/decisions.sqlite');
    const file = path.resolve(p);
    return { kind: 'sqlite', file, display: `sqlite:${file}` };
  }
  if (/^postgres(?:ql)?:\/\//i.test(text)) {
    const display = redactStoreUrl(text);
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      throw new StoreUrlError(`--store: not a valid URL: ${display}`);
    }
    if (!u.hostname && !u.searchParams.get('host')) throw new StoreUrlError(`--store ${display}: needs a host`);
    if (u.pathname.replace(/^\//, '') === '' && !u.searchParams.get('dbname')) throw new StoreUrlError(`--store ${display}: needs a database name (postgres://user@host:5432/db)`);
    const mode = u.searchParams.get('sslmode');
    if (mode !== null && !['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'].includes(mode)) {
      throw new StoreUrlError(`--store ${display}: sslmode must be disable, prefer, require, verify-ca, verify-full or no-verify`);
    }
    let password: string | undefined;
    if (passwordFile) {
      try {
        password = readFileSync(passwordFile, 'utf8').split(/\r?\n/, 1)[0];
      } catch (err) {
        throw new StoreUrlError(`--store-password-file ${passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      if (!password) throw new StoreUrlError(`--store-password-file ${passwordFile}: the first line is empty`);
    }
    return { kind: 'postgres', url: text, display, password };
  }
  throw new StoreUrlError(`--store: expected sqlite:PATH or postgres://user@host:port/db, got ${JSON.stringify(redactStoreUrl(text))}`);
}

/** Any text (a driver error, a stack) with every occurrence of the secret masked. */
export function scrubSecret(text: string, secret: string | undefined): string {
  if (!secret) return text;
  return text.split(secret).join('***');
}

/** Splits a .pgpass line on unescaped colons, undoing `\:` and `\\`. */
function pgpassFields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '\\' && i + 1 < line.length) cur += line[++i];
    else if (ch === ':') (out.push(cur), (cur = ''));
    else cur += ch;
  }
  out.push(cur);
  return out;
}

/** libpq's password file lookup (PGPASSFILE, else ~/.pgpass): host:port:database:user:password, `*` matches any. */
export function pgpassLookup(u: URL, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const file = env.PGPASSFILE || (env.HOME ? path.join(env.HOME, '.pgpass') : undefined);
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const want = [u.hostname || 'localhost', u.port || '5432', decodeURIComponent(u.pathname.replace(/^\//, '')), decodeURIComponent(u.username) || env.PGUSER || ''];
  for (const line of text.split(/\r?\n/)) {
    if (!line || line.startsWith('#')) continue;
    const f = pgpassFields(line);
    if (f.length < 5) continue;
    if (want.every((w, i) => f[i] === '*' || f[i] === w)) return f.slice(4).join(':');
  }
  return undefined;
}

/**
 * The URL the driver connects with: the password (URL, --store-password-file, PGPASSWORD, then the
 * password file) put in, so the driver never looks elsewhere. Held in memory only; never displayed.
 */
export function connectionUrl(loc: Extract<StoreLocation, { kind: 'postgres' }>, env: NodeJS.ProcessEnv = process.env): { url: string; password?: string } {
  const u = new URL(loc.url);
  if (u.password) return { url: loc.url, password: decodeURIComponent(u.password) };
  const password = loc.password ?? env.PGPASSWORD ?? pgpassLookup(u, env);
  if (password === undefined) return { url: loc.url };
  u.password = encodeURIComponent(password);
  return { url: u.toString(), password };
}
