import { attribute } from '../decisions/attribution.js';
import type { DecisionRecord } from '../decisions/record.js';
import type { Mode, Reason, Verdict } from '../policy/vocabulary.js';
import type { VetOutcome } from './vet.js';

export function settle(
  rec: DecisionRecord,
  o: { verdict: Verdict; mode: Mode; reason: Reason; rule: string | null; status: number | null },
): void {
  rec.verdict = o.verdict;
  rec.mode = o.mode;
  rec.reason = o.reason;
  rec.rule = o.rule;
  rec.status = o.status;
}

/**
 * Settle a record from what vetDestination found and what happened after: the status the client got,
 * and the reason when the upstream failed. Blame follows `attribute` (no rule for a failure or guard
 * refusal after an allow; the policy's own decision kept in detail.policy), and a no_rule deny carries
 * where the host would have been allowed.
 */
export function settleVet(rec: DecisionRecord, v: VetOutcome, status: number | null, failure?: Reason): void {
  const reason = failure ?? v.reason;
  const a = v.decision ? attribute(v.decision, { verdict: v.verdict, reason }) : { rule: v.rule };
  settle(rec, { verdict: v.verdict, mode: v.mode, reason, rule: a.rule, status });
  // One new detail object however many of these apply (a settle may run twice: a refusal after the vet).
  if (!a.policy && !v.error && !v.hint && !v.approval) return;
  const d: Record<string, unknown> = { ...rec.detail };
  if (a.policy) d.policy = a.policy;
  if (v.error) d.error = v.error;
  if (v.hint) (d.hint = v.hint.text, d.allowedPorts = v.hint.allowedPorts);
  if (v.approval) d.approval = v.approval;
  rec.detail = d;
}
