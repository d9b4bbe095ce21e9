import type { QueryFilter } from '../query.js';

/**
 * How one SQL backend spells the parts of a filter that differ: its placeholders, and how a host or path
 * glob (`*`, `?`) becomes a pattern match. The filter itself (which columns, which bounds) is written once,
 * here, for every backend.
 */
export interface SqlDialect {
  /** The placeholder for the n-th parameter (1-based). */
  placeholder(n: number): string;
  /** A condition matching `column` against the glob, and the parameter it binds. */
  glob(column: 'host' | 'path', glob: string, bind: (v: unknown) => string): string;
  /** A record field kept only in the stored JSON (no column of its own). */
  field(name: 'method' | 'capture'): string;
}

export interface SqlWhere {
  sql: string;
  params: unknown[];
}

/** Binds values in order and returns their placeholders. */
export class SqlParams {
  readonly values: unknown[] = [];
  constructor(private readonly d: SqlDialect) {}
  bind = (v: unknown): string => {
    this.values.push(v);
    return this.d.placeholder(this.values.length);
  };
}

/**
 * `WHERE ...` for a QueryFilter. `extra` conditions come first (cursors, fixed verdicts) and bind through
 * the same parameter list, so placeholders stay numbered in order.
 */
export function whereSql(f: QueryFilter, d: SqlDialect, extra: ((bind: (v: unknown) => string) => string)[] = [], params = new SqlParams(d)): SqlWhere {
  const b = params.bind;
  const c = extra.map((e) => e(b));
  if (f.sinceMs !== undefined) c.push(`time_ms >= ${b(f.sinceMs)}`);
  if (f.untilMs !== undefined) c.push(`time_ms < ${b(f.untilMs)}`);
  if (f.verdict !== undefined) c.push(`verdict = ${b(f.verdict)}`);
  if (f.agent !== undefined) c.push(`agent = ${b(f.agent)}`);
  if (f.reason !== undefined) c.push(`reason = ${b(f.reason)}`);
  if (f.rule !== undefined) c.push(`rule = ${b(f.rule)}`);
  if (f.path !== undefined) c.push(d.glob('path', f.path, b));
  // The method lives in the JSON only; the index on time (or verdict/agent) bounds the scan.
  if (f.method !== undefined) c.push(`${d.field('method')} = ${b(f.method)}`);
  if (f.capture !== undefined) c.push(`${d.field('capture')} = ${b(f.capture)}`);
  if (f.host !== undefined) {
    // An exact host uses the index; a glob matches within the other conditions.
    if (/[*?[]/.test(f.host)) c.push(d.glob('host', f.host.toLowerCase(), b));
    else c.push(`host = ${b(f.host.toLowerCase())}`);
  }
  return { sql: c.length ? `WHERE ${c.join(' AND ')}` : '', params: params.values };
}

/** Glob (`*`, `?`) to a LIKE pattern with `\` as the escape character. */
export function globToLike(glob: string): string {
  return glob.replace(/[\\%_]/g, (ch) => `\\${ch}`).replace(/\*/g, '%').replace(/\?/g, '_');
}
