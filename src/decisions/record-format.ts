import { toOcsf } from './ocsf.js';
import type { DecisionRecord } from './record.js';

/** How the JSON-lines log writes a decision record: the native record, or an OCSF event (ocsf.ts). */
export type RecordFormat = 'native' | 'ocsf';
export const RECORD_FORMATS: readonly RecordFormat[] = ['native', 'ocsf'];

export function recordEncoder(format: RecordFormat | undefined): ((r: DecisionRecord) => unknown) | undefined {
  return format === 'ocsf' ? toOcsf : undefined;
}

/**
 * `--log-format` names the operational log's format (auto/pretty/json). `ocsf` there is accepted as a
 * shorthand for `--record-format ocsf`: OCSF describes security events, never operational messages, so
 * it cannot be misread, and the operational log keeps its default (auto). Returns both formats, or the
 * reason the two flags contradict each other.
 */
export function resolveLogFormats(logFormat: string, recordFormat: string | undefined): { opLog: string; records: RecordFormat } | { error: string } {
  if (logFormat !== 'ocsf') return { opLog: logFormat, records: (recordFormat as RecordFormat | undefined) ?? 'native' };
  if (recordFormat !== undefined && recordFormat !== 'ocsf') return { error: `--log-format ocsf means --record-format ocsf; it contradicts --record-format ${recordFormat}` };
  return { opLog: 'auto', records: 'ocsf' };
}
