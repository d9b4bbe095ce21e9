import { hash } from 'node:crypto';
import { weightOf, type DecisionRecord } from './record.js';

/** The hash a chain starts from when nothing was ever deleted. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * Canonical JSON: object keys sorted at every level, no whitespace, undefined dropped. Two processes
 * (or two versions) serialising the same record must produce the same bytes, or the chain breaks.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value);
    return s === undefined ? 'null' : s;
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    if (obj[k] === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
  }
  return `{${parts.join(',')}}`;
}

// DecisionRecord's keys in sorted order (canonicalJson's UTF-16 order): the fast path writes them in
// this order directly.
const RECORD_KEYS = [
  'address', 'agent', 'bytesDown', 'bytesUp', 'capture', 'client', 'detail', 'host', 'id', 'inspected', 'method',
  'mode', 'parent', 'path', 'policyHash', 'port', 'reason', 'replica', 'rule', 'secrets', 'status', 'time', 'timings',
  'verdict',
] as const;
const KNOWN = new Set<string>(RECORD_KEYS);

/**
 * canonicalJson for a decision record, byte for byte, without sorting on every call: the record's keys
 * are known, and so are its timings' (written directly, the largest saving); only detail and anything
 * unusual go through the general function. An extra key takes the general path, so the output never
 * differs.
 */
export function canonicalRecordJson(rec: DecisionRecord): string {
  const r = rec as unknown as Record<string, unknown>;
  for (const k in r) if (!KNOWN.has(k)) return canonicalJson(rec);
  let out = '{';
  let first = true;
  for (const k of RECORD_KEYS) {
    const v = r[k];
    if (v === undefined) continue;
    let s: string;
    if (v === null) s = 'null';
    else if (typeof v === 'string') s = JSON.stringify(v);
    else if (typeof v === 'number') s = num(v);
    else if (k === 'timings') s = timingsJson(v);
    else s = canonicalJson(v);
    out += (first ? '"' : ',"') + k + '":' + s;
    first = false;
  }
  return out + '}';
}

/** The timings object's canonical JSON: written directly when it holds exactly its three numeric (or null) fields. */
function timingsJson(t: unknown): string {
  if (typeof t !== 'object' || t === null || Object.getPrototypeOf(t) !== Object.prototype) return canonicalJson(t);
  const o = t as Record<string, unknown>;
  let n = 0;
  for (const k in o) {
    if (k !== 'connectMs' && k !== 'dnsMs' && k !== 'totalMs') return canonicalJson(t);
    const v = o[k];
    if (v !== null && typeof v !== 'number') return canonicalJson(t);
    n++;
  }
  if (n !== 3) return canonicalJson(t);
  return `{"connectMs":${num(o.connectMs as number | null)},"dnsMs":${num(o.dnsMs as number | null)},"totalMs":${num(o.totalMs as number | null)}}`;
}

/** A number as JSON writes it (null, NaN and the infinities as null; -0 as 0). */
function num(v: number | null): string {
  return v !== null && Number.isFinite(v) ? String(v) : 'null';
}

/** hash_n = sha256(hash_{n-1} + canonical JSON of record n), hex. */
export function chainHash(prevHash: string, canonical: string): string {
  // One-shot hash (no Hash object per row): the same bytes, the same digest.
  return hash('sha256', prevHash + canonical, 'hex');
}

/** One stored row as the verifier sees it. */
export interface ChainRow {
  seq: number;
  id: string;
  json: string;
  hash: string;
  /** The indexed copies of record fields, checked against the JSON so a query cannot be fooled. */
  columns: { id: string; timeMs: number; verdict: string; agent: string | null; host: string; reason: string; rule: string | null; weight?: number; replica?: string };
}

export type ChainProblem = 'altered' | 'removed' | 'inserted';

export type VerifyResult =
  | { ok: true; checked: number; firstSeq: number | null; lastSeq: number | null; headHash: string }
  | { ok: false; checked: number; problem: ChainProblem; seq: number; id: string; message: string };

/**
 * Walk rows in write order starting from `startHash` (the anchor, or the hash of the row before the
 * first one checked). Reports the first break. A break is classified by looking one row ahead:
 * - a gap in seq before the row: records were removed;
 * - the next row chains from the previous one: this row was inserted;
 * - otherwise: this row was altered (content or hash).
 */
export function verifyChain(rows: Iterable<ChainRow>, startHash: string, startSeq: number | null): VerifyResult {
  let prevHash = startHash;
  let prevSeq = startSeq;
  let checked = 0;
  let firstSeq: number | null = null;
  let pending: ChainRow | null = null;
  const it = rows[Symbol.iterator]();
  const next = (): ChainRow | null => {
    const r = it.next();
    return r.done ? null : r.value;
  };
  let row = next();
  while (row) {
    firstSeq ??= row.seq;
    const mismatch = columnMismatch(row);
    if (mismatch) return { ok: false, checked, problem: 'altered', seq: row.seq, id: row.id, message: `record ${row.id} (seq ${row.seq}): indexed ${mismatch} differs from the hashed record` };
    if (chainHash(prevHash, row.json) !== row.hash) {
      if (prevSeq !== null && row.seq !== prevSeq + 1) {
        return { ok: false, checked, problem: 'removed', seq: row.seq, id: row.id, message: `records between seq ${prevSeq} and ${row.seq} were removed (chain breaks before ${row.id})` };
      }
      pending = next();
      if (pending && chainHash(prevHash, pending.json) === pending.hash) {
        return { ok: false, checked, problem: 'inserted', seq: row.seq, id: row.id, message: `record ${row.id} (seq ${row.seq}) was inserted: the next record chains from the one before it` };
      }
      return { ok: false, checked, problem: 'altered', seq: row.seq, id: row.id, message: `record ${row.id} (seq ${row.seq}) was altered: its hash does not match its content and the previous hash` };
    }
    checked++;
    prevHash = row.hash;
    prevSeq = row.seq;
    row = next();
  }
  return { ok: true, checked, firstSeq, lastSeq: prevSeq, headHash: prevHash };
}

function columnMismatch(row: ChainRow): string | null {
  let rec: DecisionRecord;
  try {
    rec = JSON.parse(row.json) as DecisionRecord;
  } catch {
    return 'JSON';
  }
  const c = row.columns;
  if (rec.id !== c.id) return 'id';
  const t = Date.parse(rec.time);
  if ((Number.isFinite(t) ? t : 0) !== c.timeMs) return 'time';
  if (rec.verdict !== c.verdict) return 'verdict';
  if ((rec.agent ?? null) !== c.agent) return 'agent';
  if (rec.host !== c.host) return 'host';
  if (rec.reason !== c.reason) return 'reason';
  if ((rec.rule ?? null) !== c.rule) return 'rule';
  // The count a summary adds up must be the one the hashed record carries.
  if (c.weight !== undefined && weightOf(rec) !== c.weight) return 'weight';
  // A fleet store: the row's replica column (what a query filters by, whose chain it sits in) is the hashed one.
  if (c.replica !== undefined && rec.replica !== c.replica) return 'replica';
  return null;
}
