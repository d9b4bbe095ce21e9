/** A grant's duration as approvers write it: 90s, 30m, 1h, 7d. Bounded: a year at most. */
const UNIT: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const MAX_GRANT_MS = 365 * UNIT.d;

/** Milliseconds, or null when the text is not a duration in range. */
export function grantDurationMs(text: string): number | null {
  const m = /^([1-9]\d{0,5})(s|m|h|d)$/.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * UNIT[m[2]];
  return ms <= MAX_GRANT_MS ? ms : null;
}
