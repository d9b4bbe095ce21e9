// Micro-benchmark of the per-request host/target/identify work (issue 15, S1/S3 CPU).
// Usage: node bench/host-normalize.mjs [root]   (root defaults to this tree; /work/baseline for "before")
// Prints ns per call for each function and input; alternate before/after runs, the machine is shared.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const root = path.resolve(process.argv[2] ?? new URL('..', import.meta.url).pathname);
const load = (p) => import(pathToFileURL(path.join(root, 'dist', p)).href);
const { normalizeHost } = await load('net/host.js');
const { parseConnectTarget, parseProxyUrl } = await load('net/target.js');
const { compilePolicy, parsePolicyText } = await load('policy/index.js');

const agents = Array.from({ length: 10 }, (_, i) => `  - name: agent${i}\n    sources: [10.${i}.0.0/16]`).join('\n');
const rules = Array.from({ length: 10 }, (_, i) => `  - name: r${i}\n    action: allow\n    hosts: [h${i}.example.com]`).join('\n');
const policy = compilePolicy(parsePolicyText(`version: 1\nagents:\n${agents}\nrules:\n${rules}\n`, 'bench.yaml'), {});

const hosts = ['127.0.0.1', 'api.example.com', 'API.Example.COM.', '[::1]'];
const cases = [
  ...hosts.map((h) => [`normalizeHost ${h}`, () => normalizeHost(h)]),
  // Inputs built once (flat strings, as the HTTP parser hands them over), not concatenated per call.
  ...hosts.map((h) => `${h}:443`).map((t) => [`parseConnectTarget ${t}`, () => parseConnectTarget(t)]),
  ...hosts.map((h) => `http://${h}:18080/small`).map((u) => [`parseProxyUrl ${u}`, () => parseProxyUrl(u)]),
  ...['127.0.0.1', '10.3.1.2', '::ffff:10.3.1.2', '::1'].map((a) => [
    `identify ${a}`,
    () => policy.identify({ authPresent: false, sourceAddress: a }),
  ]),
];

const N = 200_000;
let sink = 0;
for (const [name, fn] of cases) {
  for (let i = 0; i < 20_000; i++) sink ^= fn() ? 1 : 0; // warm up
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) sink ^= fn() ? 1 : 0;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N);
  }
  console.log(`${name.padEnd(52)} ${best.toFixed(0).padStart(6)} ns`);
}
if (sink === 42) console.log('');
