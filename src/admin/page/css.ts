/** The dashboard's stylesheet: plain CSS, readable on a laptop screen, no external fonts. */
export const APP_CSS = `:root{--fg:#1d232b;--muted:#5b6570;--line:#dde1e6;--deny:#b3261e;--allow:#1e7b34;--err:#9a5b00;--accent:#2457c5;--bg:#fff;--panel:#f6f7f9}
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
.top{display:flex;gap:1.2em;align-items:center;padding:.6em 1.2em;border-bottom:1px solid var(--line);background:var(--panel)}
.brand{font-size:16px}nav a{margin-right:1em;color:var(--accent);text-decoration:none;padding:.2em 0}nav a[aria-current=page]{border-bottom:2px solid var(--accent);font-weight:600}
.who{margin-left:auto;color:var(--muted)}.badge{background:var(--deny);color:#fff;border-radius:8px;padding:0 6px;font-size:12px}
main{padding:0 1.2em 2em}.signin{max-width:28em;margin:4em auto;padding:1.5em;border:1px solid var(--line);border-radius:6px}
.signin form{display:flex;gap:.5em;align-items:center}.signin input{flex:1}.error{color:var(--deny)}
.filters{display:flex;flex-wrap:wrap;gap:.4em .8em;align-items:end;margin:.5em 0}.filters span{display:flex;flex-direction:column}.filters label{font-size:12px;color:var(--muted)}
input,select,button{font:inherit}button{cursor:pointer}.bar{display:flex;gap:1em;align-items:center;margin:.4em 0}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid var(--line);padding:3px 6px;text-align:left;font-size:13px;vertical-align:top}
td{font-family:ui-monospace,monospace;word-break:break-all}th{color:var(--muted);font-weight:600}tbody tr.rec{cursor:pointer}tbody tr.rec:hover,tbody tr.sel{background:#eef3fd}
.v-deny{color:var(--deny);font-weight:600}.v-allow{color:var(--allow)}.v-error{color:var(--err);font-weight:600}tr.fresh{animation:fresh 2s}
@keyframes fresh{from{background:#fff6c9}to{background:transparent}}
.split{display:flex;gap:1em;align-items:flex-start}.tablewrap{flex:1;min-width:0}.detail{width:36em;max-width:45%;border:1px solid var(--line);border-radius:6px;padding:.6em 1em;background:var(--panel);position:sticky;top:.5em;max-height:95vh;overflow:auto}
.detail dl,#policy-facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em;margin:.4em 0}.detail dt,#policy-facts dt{color:var(--muted)}.detail dd,#policy-facts dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
pre{background:var(--panel);border:1px solid var(--line);padding:.5em;overflow:auto;max-height:60vh;white-space:pre-wrap;word-break:break-all}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin:.8em 0}.card{border:1px solid var(--line);border-radius:6px;padding:.5em 1em;min-width:9em}.card b{display:block;font-size:22px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(22em,1fr));gap:1em 2em}.chart{margin:0}.chart svg{width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
.chart .allow{fill:#7fbf8e}.chart .deny{fill:#e07a72}.chart .thr{stroke:var(--deny);stroke-dasharray:4 3}.chart .alert{stroke:#9a5b00;stroke-width:2}.chart text{font-size:11px;fill:var(--muted)}
figcaption{color:var(--muted);font-size:12px}.muted{color:var(--muted)}`;
