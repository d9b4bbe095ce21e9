// Overview: totals and rates, the timeline, top denied domains, agents and reasons, spike alerts.
import { $, el, localTime, note, row, safe } from './dom.js';
import { get, qs } from './api.js';
import { FAILURES } from './shared.js';
import { drawTimeline } from './chart.js';

function card(title, value, sub) {
  return el('div', { className: 'card' }, title, el('b', {}, value), el('span', { className: 'muted' }, sub));
}

function rate(n, ms) {
  const perMin = n / Math.max(1, ms / 60_000);
  return `${perMin < 10 ? perMin.toFixed(2) : Math.round(perMin)}/min`;
}

function fill(id, rows, empty) {
  $(id).replaceChildren(...(rows.length ? rows : [note(empty, 3)]));
}

async function load() {
  const since = $('range').elements.since.value;
  try {
    const [s, t] = await Promise.all([get('/api/decisions/summary?' + qs({ since })), get('/api/decisions/timeline?' + qs({ since }))]);
    const span = t.untilMs - t.sinceMs;
    const errors = (s.errorsByReason ?? []).reduce((n, r) => n + r.count, 0);
    const deniedErrors = s.deniesByReason.filter((r) => FAILURES.includes(r.reason)).reduce((n, r) => n + r.count, 0);
    const total = s.totals.allow + s.totals.deny;
    const allow = s.totals.allow - (errors - deniedErrors);
    const deny = s.totals.deny - deniedErrors;
    $('totals').replaceChildren(
      card('Decisions', total, rate(total, span)),
      card('Allowed', allow, rate(allow, span)),
      card('Denied', deny, rate(deny, span)),
      card('Errors', errors, 'DNS or upstream failed'),
      card('Spike alerts', t.alerts.length, t.alert ? `threshold ${t.alert.threshold} per ${t.alert.windowMs / 1000}s` : 'alerts off'),
    );
    drawTimeline($('chart'), t);
    $('chart-caption').textContent = `Allowed (green) and denied (red) per ${t.bucketMs / 1000}s; dashed: the alert threshold for one agent at this bucket size; vertical marks: spike alerts.`;
    fill('top-domains', (s.topDeniedDomains ?? s.topDeniedHosts.map((h) => ({ domain: h.host, count: h.count, hosts: 1 }))).map((d) => row([d.domain, d.count, d.hosts])), 'no denials');
    fill('top-agents', s.topAgents.map((a) => row([a.agent ?? '(anonymous)', a.count, a.denies])), 'no decisions');
    fill('reasons', s.deniesByReason.map((r) => row([r.reason, r.count])), 'no denials');
    fill('alerts', t.alerts.map((a) => row([localTime(a.time), a.agent ?? '(anonymous)', a.denies])), 'no spike alerts');
  } catch (err) {
    $('chart-caption').textContent = safe(err.message);
  }
}

export function init() {
  $('range').elements.since.addEventListener('change', load);
  $('overview-refresh').addEventListener('click', load);
}

export function shown() {
  load();
}
