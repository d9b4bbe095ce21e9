#!/usr/bin/env node
// A/B of the S3 plain-HTTP forward path on a shared machine: two builds' CLIs run side by side in their
// production configuration (records, store, admin API), both pinned to CPU 0; the origin and this load
// generator sit on CPU 1. After a warm-up of each, measured windows alternate A, B, A, B, … so that load
// from elsewhere falls on both alike. Reports proxy CPU µs per request for every window.
//   node bench/forward-ab.mjs --a /work/baseline --b . [--windows 6] [--seconds 3] [--clients 32]
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { closedLoop, KeepAlive } from './lib/loadgen.mjs';
import { cpuMicros } from './lib/procstat.mjs';
import { startProcess, hasTaskset, freePort, PRODUCTION_NODE_ARGS } from './lib/proxy.mjs';

const BENCH = fileURLToPath(new URL('.', import.meta.url));
const { values: opt } = parseArgs({
  options: {
    a: { type: 'string', default: '/work/baseline' },
    b: { type: 'string', default: join(BENCH, '..') },
    windows: { type: 'string', default: '6' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '32' },
    'cpu-prof': { type: 'boolean', default: false },
    'proxy-arg': { type: 'string', multiple: true, default: [] },
  },
});
const PIN = hasTaskset() && cpus().length >= 2;
if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
const work = mkdtempSync(join(tmpdir(), 'ae-fwd-ab-'));
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(work, 'key.pem'), '-out', join(work, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
const originCmd = [process.execPath, join(BENCH, 'lib/origin.mjs'), join(work, 'cert.pem'), join(work, 'key.pem')];
if (PIN) originCmd.unshift('taskset', '-c', '1');
const origin = spawn(originCmd[0], originCmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
const ports = await new Promise((r) => createInterface({ input: origin.stdout }).once('line', (l) => r(JSON.parse(l))));

const prof = opt['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(BENCH, 'results', 'prof')}`] : [];
async function start(label, root) {
  const cli = join(resolve(root), 'bin/agent-egress.js');
  const args = ['--allow', `127.0.0.1/32:${ports.http}`, '--allow-address', '127.0.0.1/32', '--log-file', join(work, `${label}.log`), '--data-dir', join(work, `data-${label}`), '--admin-listen', `127.0.0.1:${await freePort()}`, ...opt['proxy-arg']];
  return startProcess({ label, argv: [process.execPath, ...prof, ...PRODUCTION_NODE_ARGS, cli, 'serve'], portArgs: (port) => ['--listen', `127.0.0.1:${port}`, ...args], cpu: PIN ? 0 : null });
}
const proxies = [await start('A', opt.a), await start('B', opt.b)];

async function window(p, ms) {
  const { connect } = await import('node:net');
  const open = () => new Promise((res, rej) => {
    const s = connect(p.port, '127.0.0.1', () => res(s));
    s.once('error', rej);
  });
  const req = Buffer.from(`GET http://127.0.0.1:${ports.http}/small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  let c0 = 0;
  let c1 = 0;
  setTimeout(() => (c0 = cpuMicros(p.pid)), 500);
  setTimeout(() => (c1 = cpuMicros(p.pid)), 500 + ms);
  const r = await closedLoop({ clients: Number(opt.clients), warmupMs: 500, durationMs: ms, makeClient: () => new KeepAlive(open), op: (c) => c.request(req) });
  return { rate: r.ops / r.seconds, us: (c1 - c0) / r.ops, errors: r.errors };
}

const ms = Number(opt.seconds) * 1000;
for (const p of proxies) await window(p, ms); // warm-up (JIT, first undici load, store)
const out = { A: [], B: [] };
for (let i = 0; i < Number(opt.windows); i++) {
  for (const p of i % 2 ? [...proxies].reverse() : proxies) {
    const w = await window(p, ms);
    out[p.label].push(w.us);
    console.log(`${p.label} ${w.us.toFixed(1)} µs/req ${Math.round(w.rate)} req/s errors=${w.errors} load=${execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ')[0]}`);
  }
}
const med = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
console.log(`median A ${med(out.A).toFixed(1)} µs/req, B ${med(out.B).toFixed(1)} µs/req (A=${opt.a}, B=${opt.b})`);
for (const p of proxies) await p.stop();
origin.kill();
