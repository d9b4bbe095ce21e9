// Allowed/denied per bucket as stacked SVG bars, the alert threshold as a dashed line, spike alerts
// as marks on the time axis. Drawn with createElementNS: no library, no HTML parsing.
const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

function label(ms, spanMs) {
  const d = new Date(ms);
  return spanMs > 2 * 86_400_000 ? `${d.getMonth() + 1}/${d.getDate()}` : d.toTimeString().slice(0, 5);
}

export function drawTimeline(host, t) {
  const W = 900;
  const H = 220;
  const pad = { l: 44, r: 10, t: 10, b: 28 };
  const n = Math.max(1, Math.ceil((t.untilMs - t.sinceMs) / t.bucketMs));
  const start = Math.floor(t.sinceMs / t.bucketMs) * t.bucketMs;
  const cols = new Array(n + 1).fill(null).map(() => ({ allow: 0, deny: 0 }));
  for (const b of t.buckets) {
    const i = Math.round((b.t - start) / t.bucketMs);
    if (i >= 0 && i < cols.length) cols[i] = { allow: b.allow, deny: b.deny };
  }
  const thr = t.alert ? t.alert.perBucket : 0;
  const max = Math.max(1, thr * 1.1, ...cols.map((c) => c.allow + c.deny));
  const x = (i) => pad.l + (i / cols.length) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  const bw = Math.max(1, (W - pad.l - pad.r) / cols.length - 1);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Allowed and denied decisions over time' });
  root.append(svg('line', { x1: pad.l, y1: y(0), x2: W - pad.r, y2: y(0), stroke: '#999' }));
  for (const v of [0, max / 2, max]) root.append(svg('text', { x: 4, y: y(v) + 4 }, String(Math.round(v))));
  cols.forEach((c, i) => {
    const when = new Date(start + i * t.bucketMs).toLocaleString();
    if (c.allow) {
      const r = svg('rect', { class: 'allow', x: x(i), y: y(c.allow), width: bw, height: y(0) - y(c.allow) });
      r.append(svg('title', {}, `${when}: ${c.allow} allowed`));
      root.append(r);
    }
    if (c.deny) {
      const r = svg('rect', { class: 'deny', x: x(i), y: y(c.allow + c.deny), width: bw, height: y(c.allow) - y(c.allow + c.deny) });
      r.append(svg('title', {}, `${when}: ${c.deny} denied`));
      root.append(r);
    }
  });
  for (let k = 0; k <= 4; k++) {
    const i = Math.round((k / 4) * (cols.length - 1));
    root.append(svg('text', { x: x(i), y: H - 8 }, label(start + i * t.bucketMs, t.untilMs - t.sinceMs)));
  }
  if (thr > 0) {
    const line = svg('line', { class: 'thr', x1: pad.l, y1: y(thr), x2: W - pad.r, y2: y(thr) });
    line.append(svg('title', {}, `alert threshold: ${t.alert.threshold} denies per ${t.alert.windowMs / 1000}s per agent`));
    root.append(line, svg('text', { x: W - pad.r - 150, y: y(thr) - 4 }, 'alert threshold'));
  }
  for (const a of t.alerts) {
    const i = (Date.parse(a.time) - start) / t.bucketMs;
    const mark = svg('line', { class: 'alert', x1: x(i), y1: pad.t, x2: x(i), y2: y(0) });
    mark.append(svg('title', {}, `spike alert ${a.time}: agent ${a.agent ?? '(anonymous)'}, ${a.denies} denies`));
    root.append(mark);
  }
  host.replaceChildren(root);
}
