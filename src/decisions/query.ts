import { REASONS, type Reason, type Verdict } from '../policy/vocabulary.js';

/** What every query surface (CLI, admin API, store) filters decisions by. All fields optional. */
export interface QueryFilter {
  /** Inclusive lower bound, epoch ms. */
  sinceMs?: number;
  /** Exclusive upper bound, epoch ms. */
  untilMs?: number;
  verdict?: Verdict;
  agent?: string;
  /** Glob over the normalised host: `*` any run of characters, `?` one character. */
  host?: string;
  reason?: Reason;
  rule?: string;
  /** Glob over the recorded (normalised) path: `*` any run of characters, `?` one character. */
  path?: string;
  /** The request method as recorded (`CONNECT`, `GET`, `DNS`, ...), exact, upper case. */
  method?: string;
  /** How the connection reached the proxy: `transparent` = redirected by the companion firewall. */
  capture?: 'transparent';
  /** Page size; the store clamps it to MAX_LIMIT. */
  limit?: number;
  /** Opaque cursor from a previous page (newest-first pagination). */
  cursor?: string;
}

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 1000;

export class QueryError extends Error {
  override name = 'QueryError';
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(`${param}: ${message}`);
  }
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION = /^(\d{1,9})(s|m|h|d|w)$/;

/** "30s", "10m", "1h", "30d", "2w" to milliseconds; null when not a duration. */
export function parseDuration(text: string): number | null {
  const m = DURATION.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * UNIT_MS[m[2]];
}

/**
 * A point in time as written on a command line or in a query string: a duration back from `now`
 * ("1h" = one hour ago) or an ISO-8601 date/time. Throws QueryError naming `param`.
 */
export function parseTimeBound(param: string, text: string, now = Date.now()): number {
  const d = parseDuration(text);
  if (d !== null) return now - d;
  // Only ISO-looking input: Date.parse accepts many loose formats we do not want to guess at.
  if (/^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(text.trim())) {
    const ms = Date.parse(text.trim());
    if (Number.isFinite(ms)) return ms;
  }
  throw new QueryError(param, `expected a duration like 1h, 30d or an ISO-8601 time, got ${JSON.stringify(text)}`);
}

/** Raw string inputs as they arrive from the CLI or a query string. */
export interface RawFilter {
  since?: string;
  until?: string;
  decision?: string;
  agent?: string;
  host?: string;
  reason?: string;
  rule?: string;
  path?: string;
  method?: string;
  capture?: string;
  limit?: string | number;
  cursor?: string;
}

/** Validate raw strings into a QueryFilter; throws QueryError naming the first bad parameter. */
export function buildFilter(raw: RawFilter, now = Date.now()): QueryFilter {
  const f: QueryFilter = {};
  if (raw.since !== undefined) f.sinceMs = parseTimeBound('since', raw.since, now);
  if (raw.until !== undefined) f.untilMs = parseTimeBound('until', raw.until, now);
  if (raw.decision !== undefined) {
    if (raw.decision !== 'allow' && raw.decision !== 'deny') throw new QueryError('decision', 'expected allow or deny');
    f.verdict = raw.decision;
  }
  if (raw.agent !== undefined) f.agent = raw.agent;
  if (raw.host !== undefined) {
    if (raw.host.length === 0 || raw.host.length > 255) throw new QueryError('host', 'expected a host glob of 1-255 characters');
    f.host = raw.host.toLowerCase();
  }
  if (raw.reason !== undefined) {
    if (!(REASONS as readonly string[]).includes(raw.reason)) throw new QueryError('reason', `unknown reason code; one of ${REASONS.join(', ')}`);
    f.reason = raw.reason as Reason;
  }
  if (raw.rule !== undefined) f.rule = raw.rule;
  if (raw.path !== undefined) {
    if (raw.path.length === 0 || raw.path.length > 2048) throw new QueryError('path', 'expected a path glob of 1-2048 characters');
    f.path = raw.path;
  }
  if (raw.method !== undefined) {
    // Digits too: SOCKS5 is a recorded method.
    if (!/^[A-Za-z][A-Za-z0-9_-]{0,19}$/.test(raw.method)) throw new QueryError('method', 'expected a method name such as GET, CONNECT, SOCKS5 or DNS');
    f.method = raw.method.toUpperCase();
  }
  if (raw.capture !== undefined) {
    if (raw.capture !== 'transparent') throw new QueryError('capture', 'expected transparent');
    f.capture = raw.capture;
  }
  if (raw.limit !== undefined) {
    const n = typeof raw.limit === 'number' ? raw.limit : Number(raw.limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw new QueryError('limit', `expected an integer 1-${MAX_LIMIT}`);
    f.limit = n;
  }
  if (raw.cursor !== undefined) f.cursor = raw.cursor;
  return f;
}

/**
 * Host glob to an SQLite GLOB pattern. Our globs only know `*` and `?`; SQLite GLOB also reads `[...]`
 * as a class, so a literal `[` is escaped as `[[]` (hosts never contain one, raw targets might).
 */
export function hostGlobToSqlite(glob: string): string {
  return glob.toLowerCase().replace(/\[/g, '[[]');
}
