#!/usr/bin/env node
// The decision-record path alone, in process: N CONNECT-tunnel records through the production sinks
// (JSON lines to a file, the SQLite store, metrics, spike alerts) as `serve` wires them (startEgress),
// at a steady pace so the store's flush timer and the log's batches run as they do under load.
// Reports process CPU (all threads: the harness sums them) per record.
//   node bench/record-path.mjs [ROOT=.] [N=40000]     (ROOT: a checkout with dist/ built, e.g. a baseline)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
const N = Number(process.argv[3] ?? 40000);
const { startEgress } = await import(join(root, 'dist/runtime/serve.js'));
const { startRecord } = await import(join(root, 'dist/decisions/record.js'));
const { emit } = await import(join(root, 'dist/proxy/core.js'));
const { settle } = await import(join(root, 'dist/proxy/record.js'));
const { default: pino } = await import(join(root, 'node_modules/pino/pino.js'));
const dir = mkdtempSync(join(tmpdir(), 'ae-record-path-'));
const eg = await startEgress({
  listen: '127.0.0.1:0',
  flags: { allow: ['127.0.0.1/32:443'], deny: [], allowAddress: ['127.0.0.1/32'] },
  dnsServers: [],
  logFile: join(dir, 'decisions.log'),
  store: { dataDir: dir },
  logger: pino({ level: 'silent' }),
});
const core = { sink: eg.sink };

// What connect.ts / tunnel.ts do to an allowed tunnel's record.
function one(i) {
  const t0 = performance.now();
  const rec = startRecord(`127.0.0.1:${40000 + (i % 20000)}`, 'CONNECT', '127.0.0.1:443', null, 'a'.repeat(16));
  rec.host = '127.0.0.1';
  rec.port = 443;
  rec.timings.dnsMs = 0;
  rec.address = '127.0.0.1';
  rec.timings.connectMs = 0.41;
  settle(rec, { verdict: 'allow', mode: 'enforce', reason: 'rule_allow', rule: 'flag:allow:127.0.0.1/32:443', status: 200 });
  rec.bytesUp = 120;
  rec.bytesDown = 240 + (i % 7);
  emit(core, rec, t0);
}
const run = async (n) => {
  for (let i = 0; i < n; i++) {
    one(i);
    if (i % 25 === 0) await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 300)); // the store's flush and the log's last batch
};

await run(5000); // warm-up: JIT, the store's statements
const c0 = process.cpuUsage();
const w0 = performance.now();
await run(N);
const c = process.cpuUsage(c0);
const wall = performance.now() - w0;
await eg.close();
const us = (x) => +(x / N).toFixed(2);
console.log(JSON.stringify({ root, records: N, cpuUsPerRecord: us(c.user + c.system), userUs: us(c.user), sysUs: us(c.system), wallMs: Math.round(wall), rssMiB: +(process.memoryUsage().rss / 1048576).toFixed(1) }));
rmSync(dir, { recursive: true, force: true });
