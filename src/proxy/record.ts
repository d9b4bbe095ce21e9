import { newDecisionId, type DecisionRecord, type Mode, type Reason, type Verdict } from '../decisions/record.js';

/** A decision record in the making: started when the request arrives, finished once the outcome is known. */
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

export function round(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}
