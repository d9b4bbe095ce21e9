import type { DecisionRecord, Mode, Reason, Verdict } from '../decisions/record.js';

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
