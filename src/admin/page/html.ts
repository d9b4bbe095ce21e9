/**
 * The dashboard's one HTML document. It holds no data: the scripts fetch everything with the session
 * cookie after sign-in. No inline script or style (the CSP forbids both).
 */
export const INDEX_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agent-egress</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app.js"></script>
</head><body>
<header class="top">
  <strong class="brand">agent-egress</strong>
  <nav id="nav" aria-label="Views" hidden>
    <a href="#live" data-view="live">Live</a>
    <a href="#overview" data-view="overview">Overview</a>
    <a href="#approvals" data-view="approvals">Approvals <span id="pending-count" class="badge" hidden></span></a>
    <a href="#policy" data-view="policy">Policy</a>
  </nav>
  <span id="who" class="who"></span>
  <button type="button" id="signout" hidden>Sign out</button>
</header>

<section id="signin" class="signin" hidden>
  <h1>Sign in</h1>
  <p>Paste the admin token (in <code>&lt;data-dir&gt;/admin-token</code>, or <code>--admin-token</code>) or a viewer token.</p>
  <form id="signin-form">
    <label for="token">Token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
  </form>
  <p id="signin-error" class="error" role="alert"></p>
</section>

<main id="main" hidden>
<section id="view-live" class="view" aria-labelledby="h-live">
  <h2 id="h-live">Live decisions</h2>
  <form id="filters" class="filters">
    <span><label for="f-decision">Decision</label><select id="f-decision" name="decision"><option value="">any</option><option value="deny">deny</option><option value="allow">allow</option></select></span>
    <span><label for="f-agent">Agent</label><input id="f-agent" name="agent" size="10"></span>
    <span><label for="f-host">Host glob</label><input id="f-host" name="host" size="18" placeholder="*.example.com"></span>
    <span><label for="f-reason">Reason</label><select id="f-reason" name="reason"><option value="">any</option></select></span>
    <span><label for="f-rule">Rule</label><input id="f-rule" name="rule" size="10"></span>
    <span><label for="f-method">Method</label><input id="f-method" name="method" size="7" placeholder="CONNECT"></span>
    <span><label for="f-since">Since</label><input id="f-since" name="since" size="8" placeholder="1h or ISO"></span>
    <span><label for="f-until">Until</label><input id="f-until" name="until" size="8" placeholder="ISO"></span>
    <button type="submit">Apply filters</button>
    <button type="button" id="clear-filters">Clear</button>
  </form>
  <div class="bar">
    <button type="button" id="pause">Pause</button>
    <span id="live-status" role="status"></span>
  </div>
  <div class="split">
    <div class="tablewrap">
      <table id="decisions"><thead><tr><th>time</th><th>decision</th><th>agent</th><th>method</th><th>host</th><th>port</th><th>reason</th><th>rule</th></tr></thead>
      <tbody id="rows"></tbody></table>
      <button type="button" id="older" hidden>Older decisions</button>
    </div>
    <aside id="detail" class="detail" aria-labelledby="h-detail" hidden>
      <h3 id="h-detail">Decision detail</h3>
      <button type="button" id="detail-close">Close detail</button>
      <dl id="detail-fields"></dl>
      <h4>Rule that matched</h4><pre id="detail-rule"></pre>
      <h4>Hash chain</h4><dl id="detail-chain"></dl>
      <h4>Allow rule</h4><pre id="detail-allow"></pre>
      <h4>Deny rule</h4><pre id="detail-deny"></pre>
    </aside>
  </div>
</section>

<section id="view-overview" class="view" aria-labelledby="h-overview" hidden>
  <h2 id="h-overview">Overview</h2>
  <form id="range" class="filters"><span><label for="range-since">Range</label><select id="range-since" name="since">
    <option value="15m">last 15 minutes</option><option value="1h" selected>last hour</option><option value="6h">last 6 hours</option>
    <option value="24h">last 24 hours</option><option value="7d">last 7 days</option></select></span>
    <button type="button" id="overview-refresh">Refresh</button></form>
  <div id="totals" class="cards"></div>
  <figure class="chart"><div id="chart"></div><figcaption id="chart-caption"></figcaption></figure>
  <div class="grid">
    <div><h3>Top denied domains</h3><table><thead><tr><th>domain</th><th>denies</th><th>hosts</th></tr></thead><tbody id="top-domains"></tbody></table></div>
    <div><h3>Top agents</h3><table><thead><tr><th>agent</th><th>decisions</th><th>denies</th></tr></thead><tbody id="top-agents"></tbody></table></div>
    <div><h3>Denies by reason</h3><table><thead><tr><th>reason</th><th>count</th></tr></thead><tbody id="reasons"></tbody></table></div>
    <div><h3>Spike alerts</h3><table><thead><tr><th>time</th><th>agent</th><th>denies</th></tr></thead><tbody id="alerts"></tbody></table></div>
  </div>
</section>

<section id="view-approvals" class="view" aria-labelledby="h-approvals" hidden>
  <h2 id="h-approvals">Approvals</h2>
  <p id="approvals-status" role="status"></p>
  <h3>Pending</h3>
  <table><thead><tr><th>agent</th><th>destination</th><th>method</th><th>waiting</th><th>waited</th><th>reason</th><th>decision</th></tr></thead><tbody id="pending"></tbody></table>
  <h3>Active grants</h3>
  <table><thead><tr><th>agent</th><th>destination</th><th>expires</th><th>by</th><th>since</th><th></th></tr></thead><tbody id="grants"></tbody></table>
</section>

<section id="view-policy" class="view" aria-labelledby="h-policy" hidden>
  <h2 id="h-policy">Policy</h2>
  <dl id="policy-facts"></dl>
  <button type="button" id="reload">Reload policy</button> <span id="reload-status" role="status"></span>
  <h3>Last reload error</h3><pre id="policy-error"></pre>
  <h3>Policy in force</h3><pre id="policy-body"></pre>
</section>
</main>
</body></html>
`;
