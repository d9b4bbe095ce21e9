import { FAILURE_REASONS } from './record.js';
import type { Reason, Verdict } from '../policy/vocabulary.js';

/**
 * Reasons that are failures to reach the destination, not decisions: they read as errors (the CLI, the
 * refusal body), never as "denied". One list, record.ts's FAILURE_REASONS.
 */
const FAILURES: ReadonlySet<Reason> = new Set<Reason>(FAILURE_REASONS);

export function isFailure(reason: Reason): boolean {
  return FAILURES.has(reason);
}

/** What the policy alone decided, before resolution, the guard or the upstream had their say. */
export interface PolicyVerdict {
  verdict: Verdict;
  reason: Reason;
  rule: string | null;
}

/**
 * Who a record blames. `rule` names the rule behind the record's verdict: on an allow, the allowing rule;
 * on a deny, the rule that refused (a deny rule, a rule's methods or CIDRs) or, in report mode, the one
 * that would have. A deny that came after the policy said yes (the address guard, a failed lookup) is no
 * rule's doing, so it names none: a dns_failure must not read as "denied by llm-apis". Whenever the
 * outcome's reason is not the policy's own, `policy` keeps what the policy decided, for the record's
 * detail.
 */
export function attribute(policy: PolicyVerdict, outcome: { verdict: Verdict; reason: Reason }): { rule: string | null; policy?: PolicyVerdict } {
  const rule = outcome.verdict === 'deny' && policy.verdict === 'allow' && outcome.reason !== 'address_not_allowed' ? null : policy.rule;
  if (outcome.reason === policy.reason) return { rule };
  return { rule, policy: { verdict: policy.verdict, reason: policy.reason, rule: policy.rule } };
}
