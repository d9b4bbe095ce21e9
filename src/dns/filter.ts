import type { Answer } from 'dns-packet';
import type { AddressGuard } from '../net/guard.js';
import { normalizeHost } from '../net/host.js';
import type { CompiledPolicy, PolicyDecision } from '../policy/types.js';
import type { UpstreamAnswer } from './cache.js';

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
  for (const a of up.answers) {
    if (a.type !== inp.wireType || a.type === 'CNAME') continue;
    const owner = norm(a.name);
    const d = decisions.get(owner);
    if (!d) continue; // a record for a name nobody asked about: out of bailiwick, drop
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
  return { ok: true, answers, authorities, kept, stripped, reportedTarget };
}
