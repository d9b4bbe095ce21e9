#!/usr/bin/env node
// `npm run bench`: agent-egress against a direct connection, in one run, on loopback only.
// Starts a Node origin (HTTP, HTTPS, raw TCP) and the real CLI as a child process pinned to CPU 0; the
// origin and this load generator sit on CPU 1. Reports ops/s, ratio to direct, proxy CPU µs per op and
// peak RSS; then records/store on vs off for S1, memory per idle tunnel, and the policy micro-benchmark.
//   node bench/run.mjs [--quick] [--duration S] [--clients N] [--only s1,s2,s3,store,idle,policy,inspect]
//                      [--idle-tunnels N] [--cpu-prof] [--proxy-arg=--flag ...]
// Needs dist/ (npx tsc -p .). Results: bench/results/bench-<time>.{json,md} and latest.{json,md}.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readdirSync, statSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { closedLoop, s1Op, openTunnel, KeepAlive } from './lib/loadgen.mjs';
import { cpuMicros, rssKiB, hwmKiB, rssSampler } from './lib/procstat.mjs';
import { startProxy, serveFlags, hasTaskset, freePort } from './lib/proxy.mjs';

const BENCH = fileURLToPath(new URL('.', import.meta.url));
const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    clients: { type: 'string', default: '32' },
    only: { type: 'string', default: 's1,s2,s3,store,idle,policy,inspect' },
    'idle-tunnels': { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'proxy-arg': { type: 'string', multiple: true, default: [] },
  },
});
const only = new Set(opt.only.split(','));
const DURATION_MS = Number(opt.duration ?? (opt.quick ? 2 : 5)) * 1000;
const WARMUP_MS = opt.quick ? 500 : 1000;
const CLIENTS = Number(opt.clients);
const IDLE_TUNNELS = Number(opt['idle-tunnels'] ?? (opt.quick ? 2000 : 10000));
const STORE_ROUNDS = opt.quick ? 1 : 3;
const PIN = hasTaskset() && cpus().length >= 2;
const PROXY_CPU = PIN ? 0 : null;

try {
  statSync(new URL('../dist/cli/main.js', import.meta.url));
} catch {
  console.error('bench: dist/ is missing; build first with `npx tsc -p .`');
  process.exit(2);
}
if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });

const work = mkdtempSync(join(tmpdir(), 'ae-bench-'));
const log = (...a) => console.error('[bench]', ...a);
const results = { startedAt: new Date().toISOString(), node: process.version, cpus: cpus().length, pinned: PIN, durationMs: DURATION_MS, clients: CLIENTS, runs: [], store: [], idle: null, policy: null, inspect: null };

// --- origin (self-signed cert, test-only)
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(work, 'key.pem'), '-out', join(work, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
const originCmd = [process.execPath, join(BENCH, 'lib/origin.mjs'), join(work, 'cert.pem'), join(work, 'key.pem')];
if (PIN) originCmd.unshift('taskset', '-c', '1');
const origin = spawn('sh', ['-c', 'ulimit -n 65536 2>/dev/null; exec "$@"', 'sh', ...originCmd], { stdio: ['ignore', 'pipe', 'inherit'] });
const ports = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('origin did not start')), 10_000);
  createInterface({ input: origin.stdout }).once('line', (l) => {
    clearTimeout(t);
    resolve(JSON.parse(l));
  });
});

// --- proxy configurations
const flags = serveFlags();
const allow = ['--allow', `127.0.0.1/32:${ports.http},${ports.https},${ports.tcp}`, '--allow-address', '127.0.0.1/32'];
const hasStore = flags.has('--no-store');
let dataDirs = 0;
// Store on = the production default: a fresh SQLite store and the admin API on a free port.
const storeOn = async () => [
  ...(flags.has('--data-dir') ? ['--data-dir', join(work, `data-${++dataDirs}`)] : []),
  ...(flags.has('--admin-listen') ? ['--admin-listen', `127.0.0.1:${await freePort()}`] : []),
];
const storeOff = hasStore ? ['--no-store'] : [];
const CONFIGS = {
  production: async () => [...allow, '--log-file', join(work, 'decisions.log'), ...(await storeOn())],
  records_off: () => [...allow, '--no-decision-log', ...storeOff],
  store_off: () => [...allow, '--log-file', join(work, 'decisions-nostore.log'), ...storeOff],
};
const cfgArgs = async (name) => [...(await CONFIGS[name]()), ...opt['proxy-arg']];

async function proxyFor(name, extra = []) {
  const nodeArgs = opt['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(BENCH, 'results', 'prof')}`] : [];
  return startProxy({ args: [...(await cfgArgs(name)), ...extra], cpu: PROXY_CPU, nodeArgs, stderrFile: true });
}

// --- scenarios: each returns { clients, makeClient?, op }
function scenario(id, proxy) {
  const kaProxyReq = Buffer.from(`GET http://127.0.0.1:${ports.http}/small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  const kaDirectReq = Buffer.from(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  const largeReq = Buffer.from(`GET /large HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  const net = (port) => () => openPlain(port);
  switch (id) {
    case 's1_connect':
      return { unit: 'tunnels/s', clients: CLIENTS, op: s1Op({ proxy, originPort: ports.http }) };
    case 's1_connect_tls':
      return { unit: 'tunnels/s', clients: CLIENTS, op: s1Op({ proxy, originPort: ports.https, tlsInside: true }) };
    case 's2_bulk_1':
    case 's2_bulk_8': {
      const connect = proxy ? () => openTunnel(proxy.port, '127.0.0.1', ports.http) : net(ports.http);
      return { unit: 'MB/s', clients: id === 's2_bulk_1' ? 1 : 8, makeClient: () => new KeepAlive(connect), op: (c) => c.request(largeReq) };
    }
    case 's3_forward': {
      const connect = net(proxy ? proxy.port : ports.http);
      const req = proxy ? kaProxyReq : kaDirectReq;
      return { unit: 'req/s', clients: CLIENTS, makeClient: () => new KeepAlive(connect), op: (c) => c.request(req) };
    }
  }
  throw new Error(`unknown scenario ${id}`);
}

async function openPlain(port) {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** One measured run; proxy CPU is read at the start and end of the measured window only. */
async function run(id, proxy, label) {
  const sc = scenario(id, proxy);
  let cpu0 = 0;
  let cpu1 = 0;
  if (proxy) {
    setTimeout(() => (cpu0 = cpuMicros(proxy.pid)), WARMUP_MS);
    setTimeout(() => (cpu1 = cpuMicros(proxy.pid)), WARMUP_MS + DURATION_MS);
  }
  const sampler = proxy ? rssSampler(proxy.pid) : null;
  const r = await closedLoop({ clients: sc.clients, warmupMs: WARMUP_MS, durationMs: DURATION_MS, makeClient: sc.makeClient, op: sc.op });
  const peakKiB = sampler ? sampler.stop() : null;
  if (proxy && !proxy.alive()) throw new Error(`proxy died during ${id}:\n${proxy.stderr().slice(-2000)}`);
  const rate = sc.unit === 'MB/s' ? r.bytes / 1e6 / r.seconds : r.ops / r.seconds;
  const cpuUs = proxy ? cpu1 - cpu0 : null;
  const row = {
    scenario: id,
    target: label,
    unit: sc.unit,
    clients: sc.clients,
    rate,
    ops: r.ops,
    errors: r.errors,
    retries: r.retries,
    p50ms: r.p50ms,
    p99ms: r.p99ms,
    proxyCpuUsPerOp: proxy && r.ops ? cpuUs / r.ops : null,
    proxyCoreShare: proxy ? cpuUs / (DURATION_MS * 1000) : null,
    peakRssMiB: peakKiB === null ? null : peakKiB / 1024,
    firstErrors: r.firstErrors,
  };
  log(`${id.padEnd(15)} ${label.padEnd(12)} ${fmt(rate)} ${sc.unit} p50=${r.p50ms.toFixed(2)}ms p99=${r.p99ms.toFixed(2)}ms errors=${r.errors}` + (proxy ? ` cpu=${fmt(row.proxyCpuUsPerOp)}µs/op core=${row.proxyCoreShare.toFixed(2)} rss=${row.peakRssMiB.toFixed(1)}MiB` : '') + (r.errors ? ` (${r.firstErrors.join('; ')})` : ''));
  return row;
}

const fmt = (x) => (x === null || x === undefined || Number.isNaN(x) ? '-' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  // 1. S1/S2/S3: direct, then the production configuration, scenario by scenario.
  const main = ['s1_connect', 's1_connect_tls', 's2_bulk_1', 's2_bulk_8', 's3_forward'].filter((s) => only.has(s.slice(0, 2)));
  if (main.length) {
    const proxy = await proxyFor('production');
    log(`proxy: ${proxy.command}`);
    results.productionCommand = proxy.command;
    const idleKiB = rssKiB(proxy.pid);
    for (const id of main) {
      results.runs.push(await run(id, null, 'direct'));
      results.runs.push(await run(id, proxy, 'agent-egress'));
    }
    results.productionRss = { idleMiB: idleKiB / 1024, hwmMiB: hwmKiB(proxy.pid) / 1024 };
    await proxy.stop();
  }

  // 2. S1 with decision records off, store off, and the production configuration, interleaved.
  if (only.has('store')) {
    const configs = hasStore ? ['production', 'store_off', 'records_off'] : ['production', 'records_off'];
    if (!hasStore) log('serve has no --no-store yet: comparing records on (log file) against records off only');
    for (let round = 0; round < STORE_ROUNDS; round++) {
      const order = configs.map((_, i) => configs[(i + round) % configs.length]);
      for (const name of order) {
        const proxy = await proxyFor(name);
        const row = await run('s1_connect', proxy, name);
        row.round = round;
        row.command = proxy.command;
        results.store.push(row);
        await proxy.stop();
      }
    }
  }

  // 3. Memory per idle tunnel.
  if (only.has('idle')) results.idle = await idleTunnels(IDLE_TUNNELS);

  // 4. Policy scaling (its own process, on the proxy's core now that no proxy runs).
  if (only.has('inspect')) {
    const cmd = [process.execPath, join(BENCH, 'inspect-mint.mjs'), '--json', ...(opt.quick ? ['--quick'] : [])];
    results.inspect = JSON.parse(execFileSync(cmd[0], cmd.slice(1), { encoding: 'utf8' }));
  }
  if (only.has('policy')) {
    const cmd = [process.execPath, join(BENCH, 'policy-scaling.mjs'), '--json', ...(opt.quick ? ['--quick'] : [])];
    if (PIN) cmd.unshift('taskset', '-c', '0');
    results.policy = JSON.parse(execFileSync(cmd[0], cmd.slice(1), { encoding: 'utf8', maxBuffer: 1 << 20 }));
  }
} finally {
  origin.kill('SIGTERM');
}

async function idleTunnels(want) {
  const proxy = await proxyFor('production', ['--max-connections', String(want + 1000), '--max-connections-per-client', String(want + 1000), '--tunnel-idle-timeout', '10m']);
  // Baseline after some traffic, so lazily built state (JIT, pools, store) is already in the baseline.
  await closedLoop({ clients: 8, warmupMs: 0, durationMs: 1000, op: s1Op({ proxy, originPort: ports.http }) });
  await new Promise((r) => setTimeout(r, 1000));
  const baseKiB = rssKiB(proxy.pid);
  const socks = [];
  let failed = 0;
  const BATCH = 100;
  for (let i = 0; i < want; i += BATCH) {
    const got = await Promise.allSettled(Array.from({ length: Math.min(BATCH, want - i) }, () => openTunnel(proxy.port, '127.0.0.1', ports.tcp)));
    for (const g of got) g.status === 'fulfilled' ? socks.push(g.value) : failed++;
    if (failed > 50) break;
  }
  for (const s of socks) s.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 2000));
  const openKiB = rssKiB(proxy.pid);
  const row = { tunnels: socks.length, failed, baseMiB: baseKiB / 1024, openMiB: openKiB / 1024, kibPerTunnel: (openKiB - baseKiB) / Math.max(1, socks.length), command: proxy.command };
  log(`idle tunnels: ${socks.length} open (${failed} failed); RSS ${fmt(row.baseMiB)} -> ${fmt(row.openMiB)} MiB = ${row.kibPerTunnel.toFixed(2)} KiB per tunnel`);
  for (const s of socks) s.destroy();
  await proxy.stop();
  return row;
}

// --- report
const lines = [];
const direct = (id) => results.runs.find((r) => r.scenario === id && r.target === 'direct');
if (results.runs.length) {
  lines.push(`S1-S3, ${CLIENTS} clients (S2: 1 or 8 tunnels), ${DURATION_MS / 1000} s measured per run, proxy ${PIN ? 'pinned to CPU 0, load generator and origin on CPU 1' : 'unpinned'}`);
  lines.push('', '| scenario | unit | direct | agent-egress | ratio | proxy CPU µs/op | proxy core share | p50 / p99 ms | errors |', '|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results.runs.filter((x) => x.target !== 'direct')) {
    const d = direct(r.scenario);
    lines.push(`| ${r.scenario} | ${r.unit} | ${fmt(d.rate)} | ${fmt(r.rate)} | ${(r.rate / d.rate).toFixed(2)}× | ${fmt(r.proxyCpuUsPerOp)} | ${r.proxyCoreShare.toFixed(2)} | ${r.p50ms.toFixed(2)} / ${r.p99ms.toFixed(2)} | ${r.errors} |`);
  }
  const peak = Math.max(...results.runs.filter((r) => r.peakRssMiB).map((r) => r.peakRssMiB));
  lines.push('', `proxy RSS: idle ${fmt(results.productionRss.idleMiB)} MiB, peak sampled ${fmt(peak)} MiB, VmHWM ${fmt(results.productionRss.hwmMiB)} MiB`);
}
if (results.store.length) {
  const by = {};
  for (const r of results.store) (by[r.target] ??= []).push(r);
  const base = median((by.records_off ?? []).map((r) => r.rate));
  lines.push('', `S1 by configuration (${STORE_ROUNDS} interleaved rounds, median):`, '', '| configuration | tunnels/s | vs records off | proxy CPU µs/tunnel |', '|---|---:|---:|---:|');
  for (const [name, rows] of Object.entries(by)) {
    const rate = median(rows.map((r) => r.rate));
    lines.push(`| ${name} | ${fmt(rate)} | ${((rate / base - 1) * 100).toFixed(1)}% | ${fmt(median(rows.map((r) => r.proxyCpuUsPerOp)))} |`);
  }
}
if (results.idle) {
  const i = results.idle;
  lines.push('', `idle tunnels: ${i.tunnels} open, RSS ${fmt(i.baseMiB)} -> ${fmt(i.openMiB)} MiB: ${i.kibPerTunnel.toFixed(2)} KiB per tunnel above the idle baseline`);
}
if (results.policy) {
  lines.push('', `policy decide(), ${results.policy.decisions.toLocaleString('en-US')} decisions per size:`, '', '| host rules | compile ms | ns per decide() | ns with normalizeHost |', '|---:|---:|---:|---:|');
  for (const r of results.policy.rows) lines.push(`| ${r.rules.toLocaleString('en-US')} | ${r.compileMs} | ${r.nsPerDecision} | ${r.nsWithNormalize} |`);
}
if (results.inspect) {
  lines.push('', `inspection (${results.inspect.leaves} names): first mint ${results.inspect.firstMintMs} ms per name, TLS handshake with a cached leaf ${results.inspect.cachedHandshakeMs} ms`);
}
const md = lines.join('\n') + '\n';
console.log(md);
const outDir = join(BENCH, 'results');
mkdirSync(outDir, { recursive: true });
const stamp = results.startedAt.replace(/[:.]/g, '-');
for (const [name, body] of [[`bench-${stamp}.json`, JSON.stringify(results, null, 2)], [`bench-${stamp}.md`, md], ['latest.json', JSON.stringify(results, null, 2)], ['latest.md', md]]) writeFileSync(join(outDir, name), body);
log(`wrote ${join(outDir, `bench-${stamp}.{json,md}`)}`);
rmSync(work, { recursive: true, force: true });
