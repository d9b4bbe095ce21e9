// Approvals: the pending queue (who, where, how long), approve or deny with a scope, and the active
// grants with their expiry and Revoke. Refreshed by `approval` events on the decision stream, and
// polled as a fallback.
import { $, ago, el, note, row, safe } from './dom.js';
import { get, isAdmin, post } from './api.js';

let timer = null;
let available = true;

function status(t) {
  $('approvals-status').textContent = t;
}

function dest(a) {
  return `${a.host}${a.port !== null && a.port !== undefined ? ':' + a.port : ''}`;
}

const SCOPES = [
  ['once', 'once (this request)'],
  ['agent-1h', 'this agent, 1 hour'],
  ['agent-24h', 'this agent, 24 hours'],
  ['agent-always', 'this agent, always'],
  ['everyone-1h', 'everyone, 1 hour'],
  ['everyone-24h', 'everyone, 24 hours'],
  ['everyone-always', 'everyone, always'],
];

function scopeSelect(a) {
  const s = el('select', { ariaLabel: `Scope for ${safe(dest(a))}` });
  // An anonymous client has no agent to grant to.
  for (const [v, t] of SCOPES) if (a.agent !== null || !v.startsWith('agent-')) s.append(el('option', { value: v }, t));
  return s;
}

function body(choice) {
  const by = 'dashboard';
  if (choice === 'once') return { scope: 'once', by };
  const [scope, span] = choice.split('-');
  return span === 'always' ? { scope, always: true, by } : { scope, for: span, by };
}

async function act(path, payload, what) {
  try {
    await post(path, payload);
    status(what);
  } catch (err) {
    status(`${err.status ?? ''} ${safe(err.message)}`);
  }
  refresh();
}

function pendingRow(a) {
  const admin = isAdmin();
  const scope = scopeSelect(a);
  const approve = el('button', { type: 'button', disabled: !admin }, 'Approve');
  const deny = el('button', { type: 'button', disabled: !admin }, 'Deny');
  approve.addEventListener('click', () => act(`/api/approvals/${encodeURIComponent(a.id)}/approve`, body(scope.value), `approved ${safe(dest(a))}`));
  deny.addEventListener('click', () => act(`/api/approvals/${encodeURIComponent(a.id)}/deny`, { by: 'dashboard' }, `denied ${safe(dest(a))}`));
  const cell = admin ? el('td', {}, scope, ' ', approve, ' ', deny) : el('td', { className: 'muted' }, 'read-only');
  return row([a.agent ?? '(anonymous)', dest(a), a.method, a.waiting ?? 1, ago(a.createdAt), a.reason, cell], { dataset: { id: a.id } });
}

function grantRow(g) {
  const revoke = el('button', { type: 'button', disabled: !isAdmin() }, 'Revoke');
  revoke.addEventListener('click', () => act(`/api/grants/${encodeURIComponent(g.id)}/revoke`, {}, `revoked the grant for ${safe(dest(g))}`));
  return row([g.agent ?? 'everyone', dest(g), g.always ? 'always' : g.expiresAt ? new Date(g.expiresAt).toLocaleString() : '-', g.by, g.createdAt ? ago(g.createdAt) + ' ago' : '-', el('td', {}, revoke)]);
}

export async function refresh() {
  if (!available) return;
  try {
    const [p, g] = await Promise.all([get('/api/approvals'), get('/api/grants')]);
    $('pending').replaceChildren(...(p.pending.length ? p.pending.map(pendingRow) : [note('nothing is waiting', 7)]));
    $('grants').replaceChildren(...(g.grants.length ? g.grants.map(grantRow) : [note('no active grants', 6)]));
    const badge = $('pending-count');
    badge.hidden = p.pending.length === 0;
    badge.textContent = String(p.pending.length);
  } catch (err) {
    if (err.status === 404) {
      available = false;
      status('approvals are not available on this proxy');
    } else status(safe(err.message));
  }
}

export function onEvent() {
  refresh();
}

export function start() {
  available = true;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 5000);
}

export function stop() {
  clearInterval(timer);
  timer = null;
}

export function shown() {
  refresh();
}
