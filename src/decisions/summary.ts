import { displaySafe } from './display.js';
import { FAILURE_REASONS } from './record.js';

/** Aggregates over a time range, as the store computes them and `log summary` / the API show them. */
export interface Summary {
  sinceMs: number | null;
  untilMs: number | null;
  totals: { allow: number; deny: number };
  /**
   * DNS and upstream failures (FAILURE_REASONS), whatever their verdict (a dns_failure is a deny, an
   * upstream_error an allow); they are included in totals.
   */
  errorsByReason?: { reason: string; count: number }[];
  /** Policy denials only (failures excluded). */
  topDeniedHosts: { host: string; count: number }[];
  /** Policy denials grouped by registrable domain: `hosts` distinct hosts under it. */
  topDeniedDomains?: { domain: string; count: number; hosts: number }[];
  topAgents: { agent: string | null; count: number; denies: number }[];
  deniesByReason: { reason: string; count: number }[];
  /** Sparse: only minutes with at least one deny, ascending. `minute` is epoch ms at the minute start. */
  deniesPerMinute: { minute: number; count: number }[];
}

const SPARK = '▁▂▃▄▅▆▇█';

/**
 * Rebin sparse per-minute counts into at most `width` columns covering [from, to), so a day fits a
 * terminal line. Empty minutes count as zero.
 */
export function rebin(perMinute: Summary['deniesPerMinute'], from: number, to: number, width: number): number[] {
  const minutes = Math.max(1, Math.ceil((to - from) / 60_000));
  const cols = Math.max(1, Math.min(width, minutes));
  const bins = new Array<number>(cols).fill(0);
  for (const { minute, count } of perMinute) {
    const idx = Math.floor(((minute - from) / 60_000 / minutes) * cols);
    if (idx >= 0 && idx < cols) bins[idx] += count;
  }
  return bins;
}

export function sparkline(values: number[]): string {
  const max = Math.max(0, ...values);
  if (max === 0) return values.map(() => ' ').join('');
  return values.map((v) => (v === 0 ? ' ' : SPARK[Math.min(SPARK.length - 1, Math.floor((v / max) * (SPARK.length - 1)))])).join('');
}

/** Human-readable summary for the terminal. */
export function renderSummary(s: Summary, now = Date.now(), width = 60): string {
  const lines: string[] = [];
  const from = s.sinceMs ?? s.deniesPerMinute[0]?.minute ?? now - 3_600_000;
  const to = s.untilMs ?? now;
  const total = s.totals.allow + s.totals.deny;
  lines.push(`Decisions ${new Date(from).toISOString()} .. ${new Date(to).toISOString()}`);
  // Failures are counted apart: the policy allowed them, so they are neither allows nor denials here.
  const failure = (reason: string) => (FAILURE_REASONS as readonly string[]).includes(reason);
  const errorsByReason = s.errorsByReason ?? [];
  const errors = errorsByReason.reduce((n, r) => n + r.count, 0);
  const deniedErrors = s.deniesByReason.filter((r) => failure(r.reason)).reduce((n, r) => n + r.count, 0);
  lines.push(`  total ${total}   allow ${s.totals.allow - (errors - deniedErrors)}   deny ${s.totals.deny - deniedErrors}   error ${errors}`);
  lines.push('');
  if (s.topDeniedDomains) {
    lines.push('Top denied domains');
    if (s.topDeniedDomains.length === 0) lines.push('  (none)');
    for (const d of s.topDeniedDomains) {
      lines.push(`  ${String(d.count).padStart(7)}  ${displaySafe(d.domain)}${d.hosts > 1 ? `  (${d.hosts} hosts)` : ''}`);
    }
  } else {
    lines.push('Top denied hosts');
    if (s.topDeniedHosts.length === 0) lines.push('  (none)');
    for (const h of s.topDeniedHosts) lines.push(`  ${String(h.count).padStart(7)}  ${displaySafe(h.host)}`);
  }
  lines.push('');
  lines.push('Top agents (decisions / denies)');
  if (s.topAgents.length === 0) lines.push('  (none)');
  for (const a of s.topAgents) lines.push(`  ${String(a.count).padStart(7)} / ${String(a.denies).padEnd(7)} ${a.agent === null ? '(anonymous)' : displaySafe(a.agent)}`);
  lines.push('');
  for (const [title, rows] of [
    ['Denies by reason', s.deniesByReason.filter((r) => !failure(r.reason))],
    ['Errors (DNS or upstream failed; the policy allowed these)', errorsByReason],
  ] as const) {
    if (title.startsWith('Errors') && rows.length === 0) continue;
    lines.push(title);
    if (rows.length === 0) lines.push('  (none)');
    for (const r of rows) lines.push(`  ${String(r.count).padStart(7)}  ${displaySafe(r.reason)}`);
    lines.push('');
  }
  const bins = rebin(s.deniesPerMinute, from, to, width);
  const per = Math.max(1, Math.ceil((to - from) / 60_000 / bins.length));
  lines.push(`Denies over time (${per} min per column, max ${Math.max(0, ...bins)})`);
  lines.push(`  |${sparkline(bins)}|`);
  return lines.join('\n') + '\n';
}
