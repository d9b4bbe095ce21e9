import { randomBytes } from 'node:crypto';
import type { Mode, Reason, Verdict } from '../policy/vocabulary.js';


/**
 * Reasons that are failures, not refusals: the policy allowed the request (its rule is the allow rule
 * that matched), then DNS or the upstream failed. Tables and summaries show them as errors.
 */
export const FAILURE_REASONS = ['dns_failure', 'upstream_error', 'upstream_timeout'] as const satisfies readonly Reason[];

/** How a record reads for a person: allowed, denied by the policy, denied in report mode, or failed. */
export function outcomeOf(r: Pick<DecisionRecord, 'verdict' | 'mode' | 'reason'>): 'allow' | 'deny' | 'deny*' | 'error' {
  if ((FAILURE_REASONS as readonly string[]).includes(r.reason)) return 'error';
  if (r.verdict === 'deny') return r.mode === 'report' ? 'deny*' : 'deny';
  return 'allow';
}


/** One decision: what was asked, what was decided and why, and (for tunnels) what happened after. */
export interface DecisionRecord {
  /** ISO-8601 time the decision was made. */
  time: string;
  /** Unique, sortable id (time-prefixed), sent to the client in X-Agent-Egress-Decision (refusals, tunnels, forwarded responses). */
  id: string;
  /** Agent name, or null when the request carried no identity and no source rule matched. */
  agent: string | null;
  /** Client address and port as seen by the proxy. */
  client: string;
  /** CONNECT, GET, POST, …, or DNS. */
  method: string;
  /** Normalised destination host (name or canonical IP literal); the raw target when it could not be parsed. */
  host: string;
  /** Destination port; null for DNS. */
  port: number | null;
  /** Path for plain HTTP (query string dropped unless configured); null otherwise. */
  path: string | null;
  /** The address actually connected to (or that would be); null when nothing was resolved. */
  address: string | null;
  verdict: Verdict;
  /** `report` means the policy would have denied but the request was forwarded. */
  mode: Mode;
  /** Name of the rule that decided; null for default deny or refusals before the policy. */
  rule: string | null;
  reason: Reason;
  /** HTTP status returned to the client (200 for an established tunnel); DNS: rcode number. */
  status: number | null;
  bytesUp: number;
  bytesDown: number;
  timings: { dnsMs: number | null; connectMs: number | null; totalMs: number | null };
  /** Hash of the policy the decision was made with. */
  policyHash: string | null;
  /** The proxy replica that made the decision (`--replica-name`), set by a fleet store. */
  replica?: string;
  /** For a request inside an inspected tunnel: the id of the tunnel's own record. */
  parent?: string;
  /** On a CONNECT record: true when the tunnel was inspected (its requests are records of their own). */
  inspected?: boolean;
  /**
   * How the connection reached the proxy when the agent did not address it: `transparent` for a
   * connection the companion firewall redirected (the name came from its SNI or Host). Absent otherwise.
   */
  capture?: 'transparent';
  /** Names (never values) of the secrets brokered into this request. */
  secrets?: string[];
  /** Free-form detail, e.g. the Host header mismatch, the addresses the guard refused, the DNS qtype. */
  detail?: Record<string, unknown>;
}

/** What a folded record carries in `detail.aggregated`: it stands for `count` identical denials. */
export interface Aggregated {
  /** Identical denials this one record stands for, itself included (>= 2). */
  count: number;
  /** Time of the last of them (the record's own `time` is the first). */
  until: string;
}

/** How many denials a stored record stands for. */
export function weightOf(rec: DecisionRecord): number {
  const a = rec.detail?.aggregated as Aggregated | undefined;
  return a && Number.isInteger(a.count) && a.count > 1 ? a.count : 1;
}

let lastMs = 0;
let seq = 0;
const node = randomBytes(3).toString('hex');

/**
 * Time-ordered id: 9 base36 chars of ms time, a per-ms sequence, and a per-process random part
 * (so workers sharing one store never collide). Lexicographic order = creation order within a process.
 */
export function newDecisionId(now = Date.now()): string {
  if (now === lastMs) seq++;
  else {
    lastMs = now;
    seq = 0;
  }
  return now.toString(36).padStart(9, '0') + seq.toString(36).padStart(3, '0') + node;
}

/**
 * A record in the making, started when a request arrives: denied as a bad request until the entry
 * point settles it, so a record that is emitted early never claims more than was decided.
 */
export function startRecord(client: string, method: string, host: string, port: number | null, policyHash: string | null): DecisionRecord {
  const now = Date.now();
  return {
    time: new Date(now).toISOString(),
    id: newDecisionId(now),
    agent: null,
    client,
    method,
    host,
    port,
    path: null,
    address: null,
    verdict: 'deny',
    mode: 'enforce',
    rule: null,
    reason: 'bad_request',
    status: null,
    bytesUp: 0,
    bytesDown: 0,
    timings: { dnsMs: null, connectMs: null, totalMs: null },
    policyHash,
  };
}

/** Milliseconds with two decimals, as records carry them. */
export function roundMs(ms: number): number;
export function roundMs(ms: number | null): number | null;
export function roundMs(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}
