import type { Socket } from 'node:net';
import type { DecisionRecord } from '../decisions/record.js';
import { normalizeHost } from '../net/host.js';
import type { Target } from '../net/target.js';
import type { CompiledPolicy } from '../policy/types.js';
import { DEFAULT_TUNNEL_PROTOCOLS, type Mode, type TunnelProtocol } from '../policy/vocabulary.js';
import type { ProxyCore } from '../proxy/core.js';
import { settle } from '../proxy/record.js';
import { refuseSocket, type Refusal } from '../proxy/respond.js';
import { decideTunnel } from '../proxy/vet.js';
import { judge, type Expectation, type Seen } from './judge.js';
import { peekWith } from './peek.js';

/** What an opaque tunnel was authorised for, to hold its first bytes against. */
export interface TunnelCheck {
  exp: Expectation;
  mode: Mode;
  /** The rule that allowed the tunnel (named when its `protocols` refuse). */
  rule: string | null;
}

/**
 * The check for a tunnel to `target` allowed by a decision with `protocols`, dialled to `address`. For an
 * IP-literal target a name the client sends must itself be allowed, by the same decideTunnel, to that
 * address (rule CIDRs applied to it; nothing is resolved).
 */
export function tunnelCheck(
  policy: CompiledPolicy,
  agent: string | null,
  target: Target,
  address: string,
  protocols: readonly TunnelProtocol[] | undefined,
  mode: Mode,
  rule: string | null,
): TunnelCheck {
  const nameOnAddress: Expectation['nameOnAddress'] = (host) => {
    const d = decideTunnel(policy, agent, { host, port: target.port });
    if (d.verdict !== 'allow') return `${host.value} is not allowed on port ${target.port} (${d.reason}${d.rule ? `, rule ${d.rule}` : ''})`;
    if (d.effects?.inspect) return `${host.value} is inspected: CONNECT to the name, not to an address`;
    if (d.constraint && policy.vetAddresses(d.constraint, [address]).allowed.length === 0) return `${address} is not an address allowed for ${host.value}`;
    return null;
  };
  return { exp: { target, protocols: protocols ?? DEFAULT_TUNNEL_PROTOCOLS, nameOnAddress }, mode, rule };
}

/** A record's host back as a target (it holds the normalised form; anything else fails closed in the judge). */
export function recordTarget(rec: DecisionRecord): Target | null {
  try {
    return rec.port === null ? null : { host: normalizeHost(rec.host), port: rec.port };
  } catch {
    return null;
  }
}

/** TLS fatal alerts, sent in the clear before any handshake: unrecognized_name (112), access_denied (49). */
const ALERT_UNRECOGNIZED_NAME = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);
const ALERT_ACCESS_DENIED = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31]);

const NOTHING = Buffer.alloc(0);

/**
 * Peek the client's first bytes (after it was told "connected", before anything is relayed) and judge
 * them. On a pass, `pass` gets the bytes read, unchanged, for the splice to relay first (the client
 * socket is left paused). On a refusal the record says why, the client gets a TLS alert or an HTTP 403
 * inside the tunnel (or just the close), `finish` ends the tunnel, and `pass` is never called. Report
 * mode records the refusal and passes all the same. Anything thrown while judging ends the tunnel
 * unrelayed (fail closed).
 */
export function gateTunnel(core: ProxyCore, rec: DecisionRecord, client: Socket, check: TunnelCheck, finish: () => void, pass: (first: Buffer) => void): void {
  if (check.exp.protocols.includes('any')) return pass(NOTHING);
  // A tunnel idle for --tunnel-idle-timeout is closed as idle, the check or not: the shorter deadline wins.
  const idleFirst = core.limits.tunnelIdleMs < core.limits.headersTimeoutMs;
  const timeoutMs = idleFirst ? core.limits.tunnelIdleMs : core.limits.headersTimeoutMs;
  peekWith(client, { timeoutMs, maxHeaderBytes: core.limits.maxHeaderBytes }, (buf, seen) => {
    let verdict: Buffer | null;
    try {
      verdict = judgePeeked(rec, client, check, finish, buf, seen, idleFirst, timeoutMs);
    } catch {
      return finish();
    }
    if (verdict !== null) pass(verdict);
  });
}

/** The gate's answer to what the peek saw: the bytes to relay, or null (refused, or the tunnel ended). */
function judgePeeked(rec: DecisionRecord, client: Socket, check: TunnelCheck, finish: () => void, buf: Buffer, seen: Seen, idleFirst: boolean, timeoutMs: number): Buffer | null {
  if (client.destroyed || seen.kind === 'closed' || (idleFirst && seen.kind === 'timeout')) {
    // The client left, or went idle, before saying anything decisive: nothing was relayed, and the
    // tunnel's record stays as decided.
    finish();
    return null;
  }
  const j = judge(seen, check.exp, timeoutMs);
  rec.detail = { ...rec.detail, ...j.detail };
  if (j.ok) return buf;
  if (rec.verdict === 'deny') {
    // A report-mode tunnel the policy would already have refused keeps that reason; the check is noted.
    rec.detail = { ...rec.detail, contentCheck: j.reason, error: j.message };
  } else {
    const rule = j.reason === 'protocol_not_allowed' ? check.rule : null;
    settle(rec, { verdict: 'deny', mode: check.mode, reason: j.reason, rule, status: j.protocol === 'http' && check.mode === 'enforce' ? 403 : rec.status });
    rec.detail = { ...rec.detail, error: j.message, ...(rule === null && check.rule ? { tunnelRule: check.rule } : {}) };
  }
  if (check.mode === 'report') return buf;
  const t = check.exp.target;
  answerInTunnel(client, j.protocol, { status: 403, reason: j.reason, message: j.message, decisionId: rec.id, target: `${t.host.value}:${t.port}` }, finish);
  return null;
}

/**
 * Refuse inside a tunnel the client believes open, in the protocol it speaks: an HTTP answer to an HTTP
 * client, a TLS alert to a TLS client (unrecognized_name for an SNI mismatch), else just the close.
 * `after` runs once the answer is flushed, or after 5 s for a client that never reads.
 */
export function answerInTunnel(client: Socket, protocol: 'tls' | 'http' | 'other', r: Refusal, after: () => void = () => client.destroy()): void {
  if (protocol === 'http') {
    refuseSocket(client, r);
    client.once('finish', after);
  } else if (protocol === 'tls') {
    client.end(r.reason === 'sni_mismatch' ? ALERT_UNRECOGNIZED_NAME : ALERT_ACCESS_DENIED, after);
  } else {
    client.end(after);
  }
  client.setTimeout(5_000, after);
}
