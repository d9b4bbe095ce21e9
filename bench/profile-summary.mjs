#!/usr/bin/env node
// Summarises a .cpuprofile (node --cpu-prof): top functions by self time and by inclusive time.
//   node bench/profile-summary.mjs FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';

const [file, nArg] = process.argv.slice(2);
const N = Number(nArg ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
for (const id of prof.samples) self.set(id, (self.get(id) ?? 0) + 1);
const total = prof.samples.length;
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n) => {
  const f = n.callFrame;
  const url = f.url.replace(/^file:\/\//, '').replace(/.*\/(node_modules\/|dist\/)/, '$1');
  return `${f.functionName || '(anon)'} ${url}:${f.lineNumber + 1}`;
};
const selfBy = new Map();
const inclBy = new Map();
for (const [id, count] of self) {
  const n = byId.get(id);
  selfBy.set(label(n), (selfBy.get(label(n)) ?? 0) + count);
  // Inclusive: count each distinct label once per stack.
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur));
    if (!seen.has(l)) {
      seen.add(l);
      inclBy.set(l, (inclBy.get(l) ?? 0) + count);
    }
  }
}
const show = (title, m) => {
  console.log(`\n${title} (${total} samples)`);
  for (const [l, c] of [...m].sort((a, b) => b[1] - a[1]).slice(0, N)) console.log(`${((100 * c) / total).toFixed(1).padStart(5)}%  ${l}`);
};
show('self time', selfBy);
show('inclusive time', inclBy);
