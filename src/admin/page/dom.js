// Building blocks for the dashboard. Every recorded string reaches the page through text() or
// el(...children), which set textContent: no HTML is ever parsed from a record.
import { displaySafe } from './shared.js';

export const $ = (id) => document.getElementById(id);

/** Display-safe text: a recorded control or bidi character shows as an escape. */
export const safe = (v) => displaySafe(v === null || v === undefined ? '-' : String(v));

/** A multi-line block (YAML, JSON): each line display-safe, the line breaks kept. */
export const safeBlock = (text) => String(text).split('\n').map((l) => displaySafe(l)).join('\n');

/** el('td', { className: 'x' }, 'text', child): attributes are properties, children are text or nodes. */
export function el(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(n.dataset, v);
    else if (k.startsWith('aria') || k === 'role' || k === 'for') n.setAttribute(k === 'for' ? 'for' : k.replace(/^aria/, 'aria-').toLowerCase(), v);
    else n[k] = v;
  }
  for (const c of children) n.append(c instanceof Node ? c : safe(c));
  return n;
}

export function row(cells, props = {}) {
  return el('tr', props, ...cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : el('td', {}, c))));
}

/** A table's one-line message ("nothing is waiting") across all its columns. */
export function note(text, cols) {
  return el('tr', {}, el('td', { colSpan: cols, className: 'muted' }, text));
}

/** A definition list's content from [term, value] pairs. */
export function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

export function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (!Number.isFinite(s)) return '-';
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

export function localTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}
