import { DNS_APPROVAL_TIMEOUT_MS } from './approval-timeout.js';
import * as packet from 'dns-packet';
import type { DecodedPacket, Question } from 'dns-packet';
import type { Logger } from 'pino';
import { attribute } from '../decisions/attribution.js';
import { roundMs, startRecord, type DecisionRecord } from '../decisions/record.js';
import { type Mode, type Reason, type Verdict } from '../policy/vocabulary.js';
import type { DecisionSink } from '../decisions/sink.js';
import type { AddressGuard } from '../net/guard.js';
import { normalizeHost } from '../net/host.js';
import type { CompiledPolicy, PolicyDecision } from '../policy/types.js';
import type { ApprovalGate } from '../approvals/types.js';
import { approvalNote } from '../approvals/note.js';
import { DnsCache, type UpstreamAnswer } from './cache.js';
import { formatHostPort } from '../net/endpoint.js';
import { canonicalPeer } from '../net/ip.js';
import { filterAnswer } from './filter.js';
import { RateLimiter } from './rate-limit.js';
import { Upstream, UpstreamError } from './upstream.js';
import { RCODE, clientOpt, clientUdpSize, encodeResponse, formErrFromHeader, isResponse, opcodeOf, typeName } from './wire.js';

export interface ResolverDeps {
  policy: () => CompiledPolicy;
  guard: () => AddressGuard;
  sink: DecisionSink;
  upstream: Upstream;
  refuseRcode: number;
  rateLimit: RateLimiter | null;
  cache: DnsCache;
  logger?: Logger;
  /** Where an ask is held; absent or null = an ask is refused like a deny. */
  approvals?: () => ApprovalGate | null;
  /** How long a query is held for an approval: short, a resolver retries or gives up within seconds. */
  approvalTimeoutMs?: number;
}

export { DNS_APPROVAL_TIMEOUT_MS };

export interface Client {
  address: string;
  port: number;
  transport: 'udp' | 'tcp';
}

const MAX_NAME = 253;
const MAX_LABEL = 63;

/**
 * One DNS query in, at most one response out. Order matters for what leaves the host: the rate
 * limit, the packet, the agent, the name and the policy are all checked before the upstream is
 * asked anything, so a refused name is never sent anywhere.
 */
export class FilteringResolver {
  constructor(private readonly d: ResolverDeps) {}

  /** Never throws; null = send nothing. */
  async handle(buf: Buffer, client: Client): Promise<Buffer | null> {
    try {
      return await this.handleUnsafe(buf, client);
    } catch (err) {
      this.d.logger?.error({ err, client: formatHostPort(client.address, client.port) }, 'dns: query handler failed');
      return servfailFromHeader(buf);
    }
  }

  private async handleUnsafe(buf: Buffer, client: Client): Promise<Buffer | null> {
    const t0 = performance.now();
    const source = canonicalPeer(client.address);
    if (isResponse(buf)) return null; // never answer answers (reflection loops)
    let policy = this.d.policy();
    const rec = newRecord(formatHostPort(client.address, client.port), policy.hash, buf.length);
    rec.detail = { transport: client.transport };
    const finish = (
      o: { verdict: Verdict; mode?: Mode; reason: Reason; rule?: string | null; status: number | null },
      out: Buffer | null,
    ): Buffer | null => {
      rec.verdict = o.verdict;
      rec.mode = o.mode ?? 'enforce';
      rec.reason = o.reason;
      rec.rule = o.rule ?? null;
      rec.status = o.status;
      rec.bytesDown = out?.length ?? 0;
      rec.timings.totalMs = roundMs(performance.now() - t0);
      this.d.sink.write(rec);
      return out;
    };

    if (this.d.rateLimit) {
      const r = this.d.rateLimit.take(source);
      if (!r.ok) {
        // UDP: silence (answering a flood of spoofed sources would make us a reflector).
        // TCP cannot be spoofed, so the client is told. One record per run of refusals.
        const out = client.transport === 'tcp' ? refusedFromHeader(buf) : null;
        if (r.report) return finish({ verdict: 'deny', reason: 'rate_limited', status: out ? RCODE.REFUSED : null }, out);
        return out;
      }
    }

    let q: DecodedPacket;
    try {
      q = packet.decode(buf);
    } catch {
      const out = formErrFromHeader(buf);
      return finish({ verdict: 'deny', reason: 'malformed', status: out ? RCODE.FORMERR : null }, out);
    }
    const maxSize = client.transport === 'udp' ? clientUdpSize(q) : null;
    const reply = (rcode: number, parts: Omit<Parameters<typeof encodeResponse>[1], 'rcode'> = {}): Buffer =>
      encodeResponse(q, { rcode, ...parts }, maxSize);

    if ((clientOpt(q)?.ednsVersion ?? 0) > 0) {
      // RFC 6891 6.1.3: we speak EDNS version 0 only; the client may retry with it.
      return finish({ verdict: 'deny', reason: 'malformed', status: RCODE.BADVERS }, reply(RCODE.BADVERS));
    }
    if (opcodeOf(buf) !== 0) {
      return finish({ verdict: 'deny', reason: 'bad_request', status: RCODE.NOTIMP }, reply(RCODE.NOTIMP));
    }
    const question = q.questions?.length === 1 ? q.questions[0] : null;
    if (!question) {
      return finish({ verdict: 'deny', reason: 'malformed', status: RCODE.FORMERR }, reply(RCODE.FORMERR));
    }
    const wireType = question.type as string;
    const qtype = typeName(wireType);
    const qclass = question.class ?? 'IN';
    rec.host = question.name;
    rec.detail.qtype = qtype;

    const identity = policy.identify({ authPresent: false, sourceAddress: source });
    if (!identity.ok) {
      return finish({ verdict: 'deny', reason: 'auth_required', status: RCODE.REFUSED }, reply(RCODE.REFUSED));
    }
    const agent = identity.agent;
    rec.agent = agent;

    const name = checkName(question.name);
    if (!name.ok) {
      return finish({ verdict: 'deny', reason: name.reason, status: this.d.refuseRcode }, reply(this.d.refuseRcode));
    }
    const qname = name.value;
    rec.host = qname;
    if (qclass !== 'IN') {
      rec.detail.qclass = qclass;
      return finish({ verdict: 'deny', reason: 'qtype_refused', status: RCODE.REFUSED }, reply(RCODE.REFUSED));
    }

    let decision = policy.decide({ agent, host: { kind: 'name', value: qname }, port: null, qtype });
    const gate = decision.ask && decision.mode === 'enforce' ? this.d.approvals?.() ?? null : null;
    if (gate) {
      // Held before anything goes upstream: the name leaves the host only once a person approved it.
      const h0 = performance.now();
      const o = await gate.hold({ agent, host: qname, port: null, method: 'DNS', rule: decision.rule }, { timeoutMs: this.d.approvalTimeoutMs ?? DNS_APPROVAL_TIMEOUT_MS });
      rec.detail.approval = approvalNote(o, performance.now() - h0);
      if (o.kind !== 'approved') {
        const reason = o.kind === 'denied' || o.kind === 'overflow' ? 'approval_denied' : 'approval_timeout';
        return finish({ verdict: 'deny', reason, rule: decision.rule, status: this.d.refuseRcode }, reply(this.d.refuseRcode));
      }
      decision = { ...decision, verdict: 'allow', reason: 'approved', ask: undefined };
    }
    const report = decision.verdict === 'deny' && decision.mode === 'report';
    const outcome = { verdict: decision.verdict, mode: decision.mode, reason: decision.reason, rule: decision.rule };
    // A failure or guard refusal after an allow names no rule; the policy's answer goes to detail.policy.
    const blame = (verdict: Verdict, reason: Reason) => {
      const a = attribute(decision, { verdict, reason });
      if (a.policy) rec.detail!.policy = a.policy;
      return { verdict, reason, rule: a.rule };
    };
    if (decision.verdict === 'deny' && !report) {
      // The name goes nowhere: that is the whole point (DNS exfiltration).
      const rcode = decision.reason === 'qtype_refused' ? RCODE.REFUSED : this.d.refuseRcode;
      return finish({ ...outcome, status: rcode }, reply(rcode));
    }

    const key = DnsCache.key(qname, wireType, qclass);
    let up = this.d.cache.get(key);
    if (up) rec.detail.cached = true;
    else {
      const u0 = performance.now();
      try {
        const res = await this.d.upstream.query(
          { name: qname, type: question.type, class: 'IN' } as Required<Question>,
          ((q.flags ?? 0) & packet.CHECKING_DISABLED) !== 0,
        );
        rec.timings.dnsMs = roundMs(performance.now() - u0);
        up = fromUpstream(res);
      } catch (err) {
        rec.timings.dnsMs = roundMs(performance.now() - u0);
        rec.detail.error = err instanceof UpstreamError ? err.message : String(err);
        return finish({ ...outcome, ...blame('deny', 'dns_failure'), status: RCODE.SERVFAIL }, reply(RCODE.SERVFAIL));
      }
      this.d.cache.set(key, up);
    }
    if (up.rcode !== RCODE.NOERROR && up.rcode !== RCODE.NXDOMAIN) {
      rec.detail.upstreamRcode = up.rcode;
      return finish({ ...outcome, ...blame('deny', 'dns_failure'), status: RCODE.SERVFAIL }, reply(RCODE.SERVFAIL));
    }

    // A reload while we waited on the upstream must not let the old policy judge the answer's aliases.
    policy = this.d.policy();
    const f = filterAnswer({ policy, guard: this.d.guard(), agent, qname, wireType, qtype, decision }, up);
    if (!f.ok) {
      rec.detail.cnameTarget = f.target;
      if (f.chainTooLong) rec.detail.chainTooLong = true;
      const d: PolicyDecision | null = f.decision;
      return finish(
        { verdict: 'deny', reason: d?.reason ?? 'bad_request', rule: d?.rule ?? null, status: this.d.refuseRcode },
        reply(this.d.refuseRcode),
      );
    }
    if (f.stripped.length) rec.detail.stripped = f.stripped;
    if (f.dropped.length) rec.detail.dropped = f.dropped;
    if (f.reportedTarget) rec.detail.cnameTarget = f.reportedTarget.name;
    rec.address = f.kept[0] ?? null;
    const out = reply(up.rcode, { answers: f.answers, authorities: f.authorities });
    if (f.kept.length === 0 && f.stripped.length > 0) {
      // Every address was refused: an empty NOERROR, recorded as the guard's (never report-mode) deny.
      const byGuard = f.stripped.some((s) => s.why !== 'rule_cidr');
      return finish({ mode: 'enforce', ...blame('deny', byGuard ? 'private_address' : 'address_not_allowed'), status: up.rcode }, out);
    }
    if (f.reportedTarget && !report) {
      const d = f.reportedTarget.decision;
      return finish({ verdict: 'deny', mode: 'report', reason: d.reason, rule: d.rule, status: up.rcode }, out);
    }
    return finish({ ...outcome, status: up.rcode }, out);
  }
}

type NameCheck = { ok: true; value: string } | { ok: false; reason: Reason };

/** The qname as the policy sees it; over-long or invalid names are refused before anything else. */
function checkName(raw: string): NameCheck {
  const n = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (n.length > MAX_NAME || n.split('.').some((l) => l.length > MAX_LABEL)) return { ok: false, reason: 'name_too_long' };
  try {
    const h = normalizeHost(n);
    // An IP literal is not a name anyone resolves; there is nothing for the policy's host rules to match.
    if (h.kind !== 'name') return { ok: false, reason: 'bad_request' };
    return { ok: true, value: h.value };
  } catch {
    return { ok: false, reason: 'bad_request' };
  }
}

function fromUpstream(res: DecodedPacket): UpstreamAnswer {
  return {
    rcode: (res.flags ?? 0) & 0x0f,
    answers: (res.answers ?? []).filter((a) => a.type !== 'OPT'),
    authorities: (res.authorities ?? []).filter((a) => a.type === 'SOA'),
  };
}

function newRecord(client: string, policyHash: string | null, bytesUp: number): DecisionRecord & { detail: Record<string, unknown> } {
  const rec = startRecord(client, 'DNS', '', null, policyHash);
  rec.reason = 'malformed';
  rec.bytesUp = bytesUp;
  return Object.assign(rec, { detail: {} as Record<string, unknown> });
}


function headerOnlyReply(buf: Buffer, rcode: number): Buffer | null {
  const out = formErrFromHeader(buf);
  if (out) out.writeUInt16BE((out.readUInt16BE(2) & ~0x0f) | rcode, 2);
  return out;
}

function servfailFromHeader(buf: Buffer): Buffer | null {
  return headerOnlyReply(buf, RCODE.SERVFAIL);
}

function refusedFromHeader(buf: Buffer): Buffer | null {
  return headerOnlyReply(buf, RCODE.REFUSED);
}
