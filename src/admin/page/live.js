// Live view: the SSE stream of decisions as they are stored, the filters (sent to the query API and
// to the stream), paging back through the store, and one record's detail.
import { $, el, facts, localTime, row, safe, safeBlock } from './dom.js';
import { ApiError, get, qs } from './api.js';
import { FAILURES, REASONS } from './shared.js';
import * as approvals from './approvals.js';

const MAX_ROWS = 2000;
const FIELDS = ['decision', 'agent', 'host', 'reason', 'rule', 'method', 'since', 'until'];
let source = null;
let paused = false;
let held = [];
let nextCursor = null;
let selected = null;

function filters() {
  const f = {};
  const form = $('filters');
  for (const k of FIELDS) f[k] = form.elements[k].value;
  return f;
}

function outcome(r) {
  if (FAILURES.includes(r.reason)) return 'error';
  return r.verdict + (r.mode === 'report' ? ' (report)' : '');
}

function recordRow(r, fresh) {
  const cls = FAILURES.includes(r.reason) ? 'error' : r.verdict;
  const tr = row(
    [
      localTime(r.time),
      el('td', { className: `v-${cls}` }, outcome(r)),
      r.agent,
      r.method,
      r.host,
      r.port ?? '',
      r.reason,
      r.rule,
    ],
    { className: 'rec' + (fresh ? ' fresh' : ''), tabIndex: 0, dataset: { id: r.id } },
  );
  tr.addEventListener('click', () => openDetail(r.id, tr));
  tr.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') openDetail(r.id, tr);
  });
  return tr;
}

function status(text) {
  $('live-status').textContent = text;
}

function prepend(records) {
  const body = $('rows');
  // The stream sends oldest first; the table shows newest first.
  for (const r of records) body.prepend(recordRow(r, true));
  while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
}

async function load() {
  const f = filters();
  try {
    const page = await get('/api/decisions?' + qs({ ...f, limit: 100 }));
    $('rows').replaceChildren(...page.records.map((r) => recordRow(r, false)));
    nextCursor = page.nextCursor;
    $('older').hidden = !nextCursor;
    status(`${page.records.length} decisions, newest first${paused ? ' (paused)' : ''}`);
  } catch (err) {
    status(err instanceof ApiError ? `${err.status}: ${safe(err.message)}` : safe(err));
    return false;
  }
  return true;
}

async function older() {
  if (!nextCursor) return;
  try {
    const page = await get('/api/decisions?' + qs({ ...filters(), limit: 100, cursor: nextCursor }));
    $('rows').append(...page.records.map((r) => recordRow(r, false)));
    nextCursor = page.nextCursor;
    $('older').hidden = !nextCursor;
    status(`${$('rows').rows.length} decisions shown${nextCursor ? '' : ', the oldest in the store reached'}`);
  } catch (err) {
    status(safe(err.message));
  }
}

function connect() {
  source?.close();
  source = null;
  // Time bounds only matter for history: the stream is the present, and a range that ends is not followed.
  const { since: _s, until, ...f } = filters();
  if (until.trim()) {
    status(`${$('rows').rows.length} decisions up to ${safe(until)} (not following live decisions)`);
    return;
  }
  source = new EventSource('/api/decisions/stream?' + qs(f));
  source.addEventListener('decision', (e) => {
    const r = JSON.parse(e.data);
    if (paused) {
      held.push(r);
      status(`paused: ${held.length} new decision(s) waiting`);
    } else prepend([r]);
  });
  source.addEventListener('approval', (e) => approvals.onEvent(JSON.parse(e.data)));
  source.addEventListener('error', () => {
    // EventSource reconnects by itself; a closed stream after sign-out stays closed.
    if (source && source.readyState === EventSource.CLOSED) status('stream closed; reload the page to reconnect');
  });
}

export function init() {
  const sel = $('filters').elements.reason;
  for (const r of REASONS) sel.append(el('option', { value: r }, r));
  $('filters').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (await load()) connect();
  });
  $('clear-filters').addEventListener('click', async () => {
    $('filters').reset();
    if (await load()) connect();
  });
  $('pause').addEventListener('click', () => {
    paused = !paused;
    $('pause').textContent = paused ? 'Resume' : 'Pause';
    if (!paused) {
      prepend(held);
      status(`resumed: ${held.length} decision(s) added`);
      held = [];
    } else status('paused: new decisions are held until you resume');
  });
  $('older').addEventListener('click', older);
  $('detail-close').addEventListener('click', () => {
    $('detail').hidden = true;
    selected?.classList.remove('sel');
  });
}

export async function start() {
  if (await load()) connect();
}

export function stop() {
  source?.close();
  source = null;
}

export function shown() {}

async function openDetail(id, tr) {
  selected?.classList.remove('sel');
  selected = tr;
  tr.classList.add('sel');
  let d;
  try {
    d = await get(`/api/decisions/${encodeURIComponent(id)}/detail`);
  } catch (err) {
    status(safe(err.message));
    return;
  }
  const r = d.record;
  const pairs = [];
  for (const [k, v] of Object.entries(r)) pairs.push([k, v !== null && typeof v === 'object' ? JSON.stringify(v) : v]);
  facts($('detail-fields'), pairs);
  $('detail-rule').textContent = d.rule
    ? safeBlock(JSON.stringify(ruleShown(d.rule), null, 2)) + (d.ruleFromCurrentPolicy ? '' : `\n(as the policy in force now has it; the record was decided under policy ${safe(r.policyHash)})`)
    : r.rule
      ? `rule ${safe(r.rule)} is not in the policy in force now`
      : 'no rule matched (the default applied)';
  facts($('detail-chain'), d.chain ? [['seq', `${d.chain.seq} of ${d.chain.headSeq}`], ['hash', d.chain.hash], ['prev', d.chain.prev]] : [['chain', 'not found']]);
  const under = d.snippets.agent ? `# under agent ${safe(d.snippets.agent)}'s rules: (or the shared rules)\n` : '# under rules:\n';
  $('detail-allow').textContent = d.snippets.allow ? under + safeBlock(d.snippets.allow) : `no allow rule proposed: ${safe(d.snippets.allowWhy)}`;
  $('detail-deny').textContent = d.snippets.deny ? under + safeBlock(d.snippets.deny) : 'no deny rule: the recorded host is not a valid name or address';
  $('detail').hidden = false;
}

/** The rule without its unset fields, and its source position as file:line. */
function ruleShown(rule) {
  const out = {};
  for (const [k, v] of Object.entries(rule)) {
    if (v === null || v === false || (Array.isArray(v) && v.length === 0)) continue;
    if (k === 'request' && Object.values(v).every((x) => x === null)) continue;
    if (k === 'pos') out.source = `${v.file}:${v.line}`;
    else out[k] = v;
  }
  return out;
}
