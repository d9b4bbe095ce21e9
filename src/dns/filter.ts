import type { Answer } from 'dns-packet';
import type { AddressGuard } from '../net/guard.js';
import { normalizeHost } from '../net/host.js';
import type { CompiledPolicy, PolicyDecision } from '../policy/types.js';
import type { UpstreamAnswer } from './cache.js';
import { decodeSvcb, encodeSvcb, filterHint, mandatoryKeys, SVC_KEY, SvcbError, type SvcParam } from './svcb.js';

/** A CNAME chain is followed at most this far; a longer one is refused (loops, resolver abuse). */
const MAX_CHAIN = 16;

export interface FilterInput {
  policy: CompiledPolicy;
  guard: AddressGuard;
  agent: string | null;
  qname: string;
  /** dns-packet's spelling of the type (UNKNOWN_65 for HTTPS), as in the upstream answer. */
  wireType: string;
  /** IANA spelling, as the policy knows it. */
  qtype: string;
  decision: PolicyDecision;
}

export type FilterResult =
  | {
      ok: true;
      answers: Answer[];
      authorities: Answer[];
      /** Addresses kept, in answer order. */
      kept: string[];
      stripped: { address: string; why: string }[];
      /** SVCB/HTTPS records removed whole: malformed, or a TargetName the policy refuses. */
      dropped: { owner: string; target: string | null; why: string }[];
      /** An alias in the chain the policy would deny, let through because the agent is in report mode. */
      reportedTarget: { name: string; decision: PolicyDecision } | null;
    }
  | {
      ok: false;
      /** The first alias target the policy refuses (or that is not a valid name). */
      target: string;
      decision: PolicyDecision | null;
      chainTooLong?: boolean;
    };

const norm = (n: string): string => (n.endsWith('.') ? n.slice(0, -1) : n).toLowerCase();

/**
 * Reduce an upstream answer to what this agent may see: follow the CNAME chain from the question,
 * deciding every alias target with the same policy decision as the question itself (an allowed name
 * aliasing a denied one is refused: otherwise `allowed.example CNAME <secret>.attacker.example`
 * would hand out the attacker's addresses); keep only records owned by names on the chain; drop
 * A/AAAA addresses the rule's CIDRs or the address guard refuse; drop DNAME/RRSIG (synthesised
 * CNAMEs carry the meaning, and signatures no longer match what we return).
 */
export function filterAnswer(inp: FilterInput, up: UpstreamAnswer): FilterResult {
  const decisions = new Map<string, PolicyDecision>([[inp.qname, inp.decision]]);
  const aliases = new Map<string, Answer>();
  for (const a of up.answers) {
    if (a.type === 'CNAME' && !aliases.has(norm(a.name))) aliases.set(norm(a.name), a);
  }

  const chain: Answer[] = [];
  let reportedTarget: { name: string; decision: PolicyDecision } | null = null;
  let cur = inp.qname;
  for (let hop = 0; ; hop++) {
    const cname = aliases.get(cur);
    if (!cname) break;
    if (hop >= MAX_CHAIN) return { ok: false, target: cur, decision: null, chainTooLong: true };
    const rawTarget = String((cname as { data: unknown }).data);
    let target: string;
    try {
      const h = normalizeHost(rawTarget);
      if (h.kind !== 'name') return { ok: false, target: rawTarget, decision: null };
      target = h.value;
    } catch {
      return { ok: false, target: rawTarget, decision: null };
    }
    if (decisions.has(target)) {
      return { ok: false, target, decision: null, chainTooLong: true }; // a loop
    }
    const d = inp.policy.decide({ agent: inp.agent, host: { kind: 'name', value: target }, port: null, qtype: inp.qtype });
    if (d.verdict === 'deny') {
      if (d.mode !== 'report') return { ok: false, target, decision: d };
      reportedTarget ??= { name: target, decision: d };
    }
    decisions.set(target, d);
    chain.push(cname);
    cur = target;
  }

  const answers: Answer[] = [...chain];
  const kept: string[] = [];
  const stripped: { address: string; why: string }[] = [];
  const dropped: { owner: string; target: string | null; why: string }[] = [];
  for (const a of up.answers) {
    if (a.type !== inp.wireType || a.type === 'CNAME') continue;
    const owner = norm(a.name);
    const d = decisions.get(owner);
    if (!d) continue; // a record for a name nobody asked about: out of bailiwick, drop
    if ((a.type as string) === SVCB_TYPE || (a.type as string) === HTTPS_TYPE) {
      const v = vetService(inp, a, d, decisions);
      stripped.push(...v.stripped);
      kept.push(...v.kept);
      if (v.reportedTarget) reportedTarget ??= v.reportedTarget;
      if (v.answer === null) dropped.push({ owner, target: v.target, why: v.why });
      else answers.push(v.answer);
      continue;
    }
    if (a.type === 'A' || a.type === 'AAAA') {
      const address = String((a as { data: unknown }).data);
      if (d.constraint) {
        const v = inp.policy.vetAddresses(d.constraint, [address]);
        if (v.allowed.length === 0) {
          stripped.push({ address, why: 'rule_cidr' });
          continue;
        }
      }
      const g = inp.guard.check(address);
      if (!g.ok) {
        stripped.push({ address, why: g.range });
        continue;
      }
      kept.push(address);
    }
    answers.push(a);
  }
  const authorities = up.authorities.filter((a) => a.type === 'SOA');
  return { ok: true, answers, authorities, kept, stripped, dropped, reportedTarget };
}

// dns-packet's spelling of the two types it cannot decode (their RDATA arrives as raw bytes).
const SVCB_TYPE = 'UNKNOWN_64';
const HTTPS_TYPE = 'UNKNOWN_65';

interface ServiceVet {
  /** The record to return (hints reduced to the accepted ones), or null to drop it. */
  answer: Answer | null;
  target: string | null;
  why: string;
  kept: string[];
  stripped: { address: string; why: string }[];
  reportedTarget: { name: string; decision: PolicyDecision } | null;
}

/**
 * An SVCB/HTTPS record gets the checks an alias and an address record get: its TargetName is decided like
 * a CNAME target (the owner's decision when it is "."), and each ipv4hint/ipv6hint address must pass the
 * rule CIDRs of both names and the address guard. Refused hints are removed; a record that cannot be
 * decoded strictly, names a refused target, or would lose a mandatory key is dropped.
 */
function vetService(inp: FilterInput, a: Answer, ownerDecision: PolicyDecision, decisions: Map<string, PolicyDecision>): ServiceVet {
  const out: ServiceVet = { answer: null, target: null, why: 'malformed', kept: [], stripped: [], reportedTarget: null };
  const data = (a as { data: unknown }).data;
  if (!Buffer.isBuffer(data)) return out;
  let r;
  try {
    r = decodeSvcb(data);
  } catch (err) {
    if (err instanceof SvcbError) return out;
    throw err;
  }
  let targetDecision = ownerDecision;
  if (r.target !== '') {
    out.target = r.target;
    let h;
    try {
      h = normalizeHost(r.target);
    } catch {
      out.why = 'bad_target';
      return out;
    }
    if (h.kind !== 'name') {
      out.why = 'bad_target';
      return out;
    }
    out.target = h.value;
    targetDecision =
      decisions.get(h.value) ?? inp.policy.decide({ agent: inp.agent, host: { kind: 'name', value: h.value }, port: null, qtype: inp.qtype });
    if (targetDecision.verdict === 'deny') {
      if (targetDecision.mode !== 'report') {
        out.why = 'target_denied';
        return out;
      }
      out.reportedTarget = { name: h.value, decision: targetDecision };
    }
  }
  const mandatory = mandatoryKeys(r);
  if (r.priority !== 0 && r.unknownKeys.some((k) => mandatory.includes(k))) {
    out.why = 'unknown_mandatory_key';
    return out;
  }
  const constraints = [ownerDecision.constraint, targetDecision.constraint].filter((c) => c !== null);
  const accept = (address: string): boolean => {
    for (const c of constraints) {
      if (inp.policy.vetAddresses(c, [address]).allowed.length === 0) {
        out.stripped.push({ address, why: 'rule_cidr' });
        return false;
      }
    }
    const g = inp.guard.check(address);
    if (!g.ok) out.stripped.push({ address, why: g.range });
    else out.kept.push(address);
    return g.ok;
  };
  const params: SvcParam[] = [];
  // AliasMode carries no SvcParams worth keeping (RFC 9460 §2.4.2); encodeSvcb drops them.
  for (const p of r.priority === 0 ? [] : r.params) {
    if (p.key !== SVC_KEY.ipv4hint && p.key !== SVC_KEY.ipv6hint) {
      params.push(p);
      continue;
    }
    const f = filterHint(p.key, p.value, accept);
    if (f.value.length > 0) params.push({ key: p.key, value: f.value });
    else if (mandatory.includes(p.key)) {
      out.why = 'mandatory_hint_refused';
      return out;
    }
  }
  out.answer = { ...a, data: encodeSvcb({ ...r, params }) } as Answer;
  return out;
}
