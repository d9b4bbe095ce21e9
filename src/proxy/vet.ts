import type { Mode, Reason, Verdict } from '../policy/vocabulary.js';
import type { AddressGuard } from '../net/guard.js';
import { ResolveError, type Resolver } from '../net/resolve.js';
import type { Target } from '../net/target.js';
import type { HttpFacts } from '../policy/request-rules.js';
import { allowedPorts, portItems, portsHint } from '../policy/ports.js';
import type { CompiledPolicy, PolicyDecision } from '../policy/types.js';
import type { ApprovalGate, HoldOutcome } from '../approvals/types.js';
import { approvalNote, type ApprovalNote } from '../approvals/note.js';
export type { ApprovalNote };

/**
 * A tunnel (CONNECT) is inspected when the rule that decides it, judged as an inspected tunnel, asks
 * for inspection; then each request inside is decided on its own. Otherwise it is an opaque tunnel,
 * which rules constraining methods or requests refuse (they could not be enforced inside).
 */
export function decideTunnel(policy: CompiledPolicy, agent: string | null, target: Target): PolicyDecision {
  const inspected = policy.decide({ agent, host: target.host, port: target.port, tunnel: 'inspected' });
  if (inspected.verdict === 'allow' && inspected.effects?.inspect) return inspected;
  return policy.decide({ agent, host: target.host, port: target.port, tunnel: 'opaque' });
}

/** Everything the checks need, captured once per request so a policy reload mid-request cannot mix two policies. */
export interface VetContext {
  policy: CompiledPolicy;
  guard: AddressGuard;
  resolver: Resolver;
  /** Where an ask is held for a person; absent = an ask is refused (approval_required). */
  approvals?: ApprovalGate | null;
}

/** What vetDestination needs of the client connection: to notice it going away while held. */
export interface ClientLink {
  readonly destroyed: boolean;
  once(event: 'close', fn: () => void): unknown;
  off(event: 'close', fn: () => void): unknown;
}



interface Common {
  decision: PolicyDecision | null;
  /** The policy that decided (the tunnel content check decides names it sees with the same one). */
  policy: CompiledPolicy;
  /** Verdict and mode as recorded (report mode: verdict deny, forwarded anyway). */
  verdict: Verdict;
  mode: Mode;
  reason: Reason;
  rule: string | null;
  dnsMs: number | null;
  /** Addresses refused after resolution, with why (for the record). */
  refused?: { address: string; why: string }[];
  /** no_rule only: where the host would be allowed ("example.com is allowed on port 443 only"). */
  hint?: { text: string; allowedPorts: string[] };
  /** Why resolution failed, for the record. */
  error?: string;
  /** Set when the request was held for an approval. */
  approval?: ApprovalNote;
}

export type VetOutcome =
  | (Common & { ok: true; addresses: string[] })
  | (Common & { ok: false; status: number; message?: string });

/**
 * The one path from "who wants to go where" to "these vetted addresses, or no": policy decision, then
 * (only for a name some allow rule could match) resolution, then the rule's address constraints and the
 * address guard on every resolved address. The caller connects only to an address returned here.
 */
export async function vetDestination(
  ctx: VetContext,
  agent: string | null,
  target: Target,
  method?: string,
  http?: HttpFacts,
  /** The client's socket: when it closes, a held request stops waiting (nothing is allocated unless held). */
  client?: ClientLink,
): Promise<VetOutcome> {
  const decision = method === undefined ? decideTunnel(ctx.policy, agent, target) : ctx.policy.decide({ agent, host: target.host, port: target.port, method, http });
  const report = decision.verdict === 'deny' && decision.mode === 'report';
  // An ask in enforce mode is held, after the checks an allow gets: a name resolving only to private
  // or metadata addresses is refused by the guard and never put to a person. Without a broker, refused.
  const asking = decision.ask === true && !report && !!ctx.approvals;
  const hint = decision.reason === 'no_rule' ? hintFor(ctx.policy, agent, target, method) : undefined;
  const base = { decision, policy: ctx.policy, verdict: decision.verdict, mode: decision.mode, reason: decision.reason, rule: decision.rule, dnsMs: null, hint };
  if (decision.verdict === 'deny' && !report && !asking) {
    // Refused before any lookup: resolving a name the policy refuses would leak it to DNS.
    return { ...base, ok: false, status: 403 };
  }

  let addresses: string[];
  let dnsMs: number | null = null;
  if (target.host.kind === 'ip') {
    addresses = [target.host.value];
  } else {
    const t0 = performance.now();
    try {
      addresses = await ctx.resolver.resolve(target.host.value);
    } catch (err) {
      dnsMs = performance.now() - t0;
      const timeout = err instanceof ResolveError && err.code === 'timeout';
      const message = err instanceof ResolveError && err.code === 'not_found' ? `${target.host.value} does not resolve` : undefined;
      const error = String((err as Error).message ?? err).slice(0, 200);
      return { ...base, dnsMs, ok: false, verdict: 'deny', reason: 'dns_failure', status: timeout ? 504 : 502, message, error };
    }
    dnsMs = performance.now() - t0;
  }

  const refused: { address: string; why: string }[] = [];
  let ruleOk = addresses;
  if (decision.constraint) {
    const v = ctx.policy.vetAddresses(decision.constraint, addresses);
    ruleOk = v.allowed;
    for (const a of v.refused) refused.push({ address: a, why: 'rule_cidr' });
  }
  const passed: string[] = [];
  for (const a of ruleOk) {
    const g = ctx.guard.check(a, target.port);
    if (g.ok) passed.push(a);
    else refused.push({ address: a, why: g.range });
  }
  if (passed.length === 0) {
    // The guard is never in report mode: an SSRF to a metadata address is not something to "observe".
    const byGuard = refused.some((r) => r.why !== 'rule_cidr');
    return {
      ...base,
      dnsMs,
      refused,
      ok: false,
      verdict: 'deny',
      mode: 'enforce',
      reason: byGuard ? 'private_address' : 'address_not_allowed',
      status: 403,
    };
  }
  const vetted = { ...base, dnsMs, refused: refused.length ? refused : undefined };
  if (asking) {
    const t0 = performance.now();
    const ac = new AbortController();
    const gone = (): void => ac.abort();
    if (client?.destroyed) ac.abort();
    else client?.once('close', gone);
    try {
      const o = await ctx.approvals!.hold(
        { agent, host: target.host.value, port: target.port, method: method ?? 'CONNECT', rule: decision.rule },
        { signal: ac.signal },
      );
      return heldOutcome(vetted, o, passed, performance.now() - t0);
    } finally {
      client?.off('close', gone);
    }
  }
  return { ...vetted, ok: true, addresses: passed };
}

/** A held request's end as a vet outcome: approved goes on to the vetted addresses; anything else is 403. */
export function heldOutcome(
  base: Omit<Common, 'approval'>,
  o: HoldOutcome,
  addresses: string[],
  waitedMs: number,
): VetOutcome {
  const approval = approvalNote(o, waitedMs);
  if (o.kind === 'approved') return { ...base, approval, ok: true, verdict: 'allow', mode: 'enforce', reason: 'approved', addresses };
  const reason = o.kind === 'denied' || o.kind === 'overflow' ? 'approval_denied' : 'approval_timeout';
  const message = o.kind === 'overflow' ? `too many approvals pending (${o.limit === 'agent' ? 'for this agent' : 'in total'}); refused without asking` : undefined;
  return { ...base, approval, ok: false, verdict: 'deny', mode: 'enforce', reason, status: 403, message };
}

/** Only on the deny path: decide() once per stretch of ports, so never for an allowed request. */
function hintFor(policy: CompiledPolicy, agent: string | null, target: Target, method?: string): VetOutcome['hint'] {
  const ports = allowedPorts(policy, { agent, host: target.host, method });
  if (ports === null || ports.length === 0) return undefined;
  return { text: portsHint(target.host.value, ports), allowedPorts: portItems(ports) };
}
