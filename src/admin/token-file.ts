import { closeSync, constants, fstatSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

/** The admin token's file name inside the data dir (next to the decision store). */
export const ADMIN_TOKEN_FILE = 'admin-token';

export class AdminTokenError extends Error {
  override name = 'AdminTokenError';
  constructor(
    message: string,
    /** The errno code when the file could not be opened (EACCES: another user's file). */
    readonly errno?: string,
  ) {
    super(message);
  }
}

export function adminTokenPath(dataDir: string): string {
  return path.join(dataDir, ADMIN_TOKEN_FILE);
}

// Printable, no spaces: what fits in an Authorization header unquoted. 16 characters at least, so a
// hand-written file cannot hold a guessable token.
const TOKEN_SHAPE = /^[\x21-\x7e]{16,512}$/;

/**
 * Reads the token file, or null when it does not exist. Refuses (throws) a file that another user
 * could have written or can read: a symlink, not a regular file, owned by someone else than this
 * process's user, or with any group/other permission bit. A token an agent could read or plant is
 * worse than none, so this fails closed instead of warning.
 */
export function readAdminTokenFile(file: string, opts: { anyOwner?: boolean; label?: string } = {}): string | null {
  const what = opts.label ?? 'admin token file';
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new AdminTokenError(`${what} ${file} is a symlink: refusing to use it`);
    throw new AdminTokenError(`cannot read the ${what} ${file}: ${(err as Error).message}`, code);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new AdminTokenError(`${what} ${file} is not a regular file: refusing to use it`);
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid && !opts.anyOwner) {
      throw new AdminTokenError(`${what} ${file} is owned by uid ${st.uid}, not by this user (uid ${uid}): refusing to use it`);
    }
    if ((st.mode & 0o077) !== 0) {
      throw new AdminTokenError(
        `${what} ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: other users may read it; run chmod 600 ${file} (or delete it to get a new token)`,
      );
    }
    const token = readFileSync(fd, 'utf8').trim();
    if (!TOKEN_SHAPE.test(token)) throw new AdminTokenError(`${what} ${file} does not hold a token (16-512 printable characters, no spaces)`);
    return token;
  } finally {
    closeSync(fd);
  }
}

/**
 * The token `serve` uses when no --admin-token is given: the one stored in the data dir, or a new
 * random one. The new one is written whole to a private temporary file and then hard-linked into
 * place: link() never replaces an existing name, so a reader never sees a half-written token and two
 * processes starting together end up agreeing on the first one linked.
 */
export function loadOrCreateAdminToken(dataDir: string): { token: string; file: string; created: boolean } {
  const file = adminTokenPath(dataDir);
  const existing = readAdminTokenFile(file);
  if (existing) return { token: existing, file, created: false };
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new AdminTokenError(`cannot create the data dir ${dataDir} for the admin token: ${(err as Error).message}`);
  }
  const token = randomBytes(32).toString('base64url');
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, `${token}\n`);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, file);
    } catch (err) {
      // Another process (a parallel start) linked its token first: use that one.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        const other = readAdminTokenFile(file);
        if (other) return { token: other, file, created: false };
      }
      throw err;
    }
  } catch (err) {
    if (err instanceof AdminTokenError) throw err;
    throw new AdminTokenError(`cannot write the admin token file ${file}: ${(err as Error).message}`);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* never created */
    }
  }
  return { token, file, created: true };
}

/**
 * What a CLI admin client sends when no token is given: the serve-generated token in the data dir, if
 * this user can read it. Unreadable (another user's data dir) or absent means no token, and the admin
 * API answers 401; a file that fails the safety checks is an error, as it is for serve.
 */
export function findAdminToken(dataDir: string): string | null {
  try {
    // root (an operator with sudo) may read the token of a proxy running as its own service user.
    return readAdminTokenFile(adminTokenPath(dataDir), { anyOwner: process.geteuid?.() === 0 });
  } catch (err) {
    if (err instanceof AdminTokenError && (err.errno === 'EACCES' || err.errno === 'EPERM')) return null;
    throw err;
  }
}

export interface AdminAuthConfig {
  /** An explicit token (--admin-token / AGENT_EGRESS_ADMIN_TOKEN). */
  token?: string;
  /** --no-admin-auth. */
  noAuth?: boolean;
}

export interface AdminAuth {
  token?: string;
  open: boolean;
  /** Where the generated/reused token lives, when it came from the data dir. */
  file?: string;
  created?: boolean;
}

/** serve's (and the cluster primary's) one rule: explicit token, else explicitly open, else the data dir's token. */
export function resolveAdminAuth(cfg: AdminAuthConfig, dataDir: string): AdminAuth {
  if (cfg.token) return { token: cfg.token, open: false };
  if (cfg.noAuth) return { open: true };
  const t = loadOrCreateAdminToken(dataDir);
  return { token: t.token, open: false, file: t.file, created: t.created };
}

export const NO_ADMIN_AUTH_WARNING =
  'ADMIN API WITHOUT AUTHENTICATION (--no-admin-auth): any local process, including an agent, can read every decision and the policy and reload it';

/** One start-up line about admin auth: where the token is (never the token), or the loud warning. */
export function logAdminAuth(auth: AdminAuth, logger: { info(o: object, m: string): void; warn(m: string): void }): void {
  if (auth.open) logger.warn(NO_ADMIN_AUTH_WARNING);
  else if (auth.file) logger.info({ tokenFile: auth.file, created: auth.created }, auth.created ? 'admin API token generated' : 'admin API token read from the data dir');
}

/**
 * The viewer token from --viewer-token or --viewer-token-file (the file held to the admin token file's
 * rules: this user's, mode 0600, no symlink). Throws AdminTokenError on a contradiction or a bad file.
 */
export function resolveViewerToken(o: { token?: string; file?: string; noAuth?: boolean; adminToken?: string }): string | undefined {
  if (o.token && o.file) throw new AdminTokenError('--viewer-token and --viewer-token-file contradict each other');
  if ((o.token || o.file) && o.noAuth) throw new AdminTokenError('--viewer-token needs the admin API to have a token (not --no-admin-auth)');
  let token = o.token;
  if (o.file) {
    const t = readAdminTokenFile(o.file, { label: 'viewer token file' });
    if (t === null) throw new AdminTokenError(`viewer token file ${o.file} does not exist`);
    token = t;
  }
  if (token !== undefined && !TOKEN_SHAPE.test(token)) throw new AdminTokenError('the viewer token must be 16-512 printable characters, no spaces');
  if (token !== undefined && token === o.adminToken) throw new AdminTokenError('the viewer token must differ from the admin token');
  return token;
}
