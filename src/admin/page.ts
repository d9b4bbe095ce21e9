import { UNSAFE, displaySafe } from '../decisions/display.js';
import { FAILURE_REASONS } from '../decisions/record.js';

/**
 * The small read-only page at GET /. No build step, no data in the HTML: the script fetches the API
 * with a bearer token the user pastes, kept in sessionStorage (never in a URL, never in a cookie).
 * Everything from the API is rendered with textContent, never innerHTML (so no HTML is ever parsed
 * from a record), and through the same displaySafe() as the CLI, embedded below, so a recorded
 * control or bidi character shows as an escape instead of reordering or hiding the row.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agent-egress decisions</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui.css">
</head><body>
<h1>agent-egress: recent decisions</h1>
<form id="auth"><label>Admin token <input id="token" type="password" autocomplete="off"></label>
<button>Use token</button> <button type="button" id="forget">Forget</button></form>
<form id="filters">
<select id="decision"><option value="">any decision</option><option>deny</option><option>allow</option></select>
<input id="agent" placeholder="agent"> <input id="host" placeholder="host glob, e.g. *.example.com">
<input id="since" placeholder="since (1h, 30d, ISO)" value="1h"> <button>Refresh</button></form>
<p id="status"></p>
<table><thead><tr><th>time</th><th>decision</th><th>agent</th><th>method</th><th>host</th><th>port</th><th>reason</th><th>rule</th><th>id</th></tr></thead>
<tbody id="rows"></tbody></table>
<script src="/ui.js"></script>
</body></html>
`;

export const PAGE_CSS = `body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;font-family:ui-monospace,monospace;font-size:13px}
tr.deny td:nth-child(2){color:#b00;font-weight:bold}tr.error td:nth-child(2){color:#a60;font-weight:bold}form{margin:.5em 0}#status{color:#555}`;

export const PAGE_JS = `(() => {
  const UNSAFE = ${UNSAFE};
  const displaySafe = ${displaySafe.toString()};
  // DNS and upstream failures: the policy allowed these, so they read as errors, not as denials.
  const FAILURES = ${JSON.stringify(FAILURE_REASONS)};
  const outcome = (r) => FAILURES.includes(r.reason) ? 'error' : r.verdict + (r.mode === 'report' ? ' (report)' : '');
  const $ = (id) => document.getElementById(id);
  const KEY = 'agent-egress-admin-token';
  $('auth').addEventListener('submit', (e) => { e.preventDefault(); sessionStorage.setItem(KEY, $('token').value); $('token').value = ''; load(); });
  $('forget').addEventListener('click', () => { sessionStorage.removeItem(KEY); $('rows').replaceChildren(); $('status').textContent = 'token forgotten'; });
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); load(); });
  async function load() {
    const q = new URLSearchParams({ limit: '200' });
    for (const k of ['decision', 'agent', 'host', 'since']) { const v = $(k).value.trim(); if (v) q.set(k, v); }
    const headers = {};
    const t = sessionStorage.getItem(KEY);
    if (t) headers.authorization = 'Bearer ' + t;
    $('status').textContent = 'loading...';
    try {
      const res = await fetch('/api/decisions?' + q, { headers });
      const body = await res.json();
      if (!res.ok) { $('status').textContent = res.status + ': ' + displaySafe(String(body.message || body.error)); return; }
      const rows = body.records.map((r) => {
        const tr = document.createElement('tr');
        tr.className = FAILURES.includes(r.reason) ? 'error' : r.verdict;
        for (const v of [r.time, outcome(r), r.agent ?? '-', r.method, r.host, r.port ?? '', r.reason, r.rule ?? '-', r.id]) {
          const td = document.createElement('td'); td.textContent = displaySafe(String(v)); tr.appendChild(td);
        }
        return tr;
      });
      $('rows').replaceChildren(...rows);
      $('status').textContent = rows.length + ' decisions, newest first';
    } catch (err) { $('status').textContent = displaySafe(String(err)); }
  }
  load();
})();
`;
