#!/usr/bin/env node
// `npm run bench`: agent-egress against a direct connection, in one run, on loopback only.
// Starts a Node origin (HTTP, HTTPS, raw TCP) and, pinned to CPU 0, the real CLI in its production
// configuration next to two Node references: the floor (bench/lib/floor.mjs, the least a Node proxy can
// do) and the npm `proxy` package; the origin and this load generator sit on CPU 1. Rounds rotate the
// target order. Reports ops/s, ratios to direct and to the floor, proxy CPU µs per op and RSS; then
// records/store on vs off for S1, the memory figures (idle, per idle tunnel, churn, after load) and the
// policy micro-benchmark. `features`: S1/S3 of production against production plus inspection, request rules,
// a brokered secret, SOCKS5 and transparent listeners, none of them matched. `inspected`: requests inside
// an open inspected tunnel against S3, and a new inspected tunnel against a new uninspected one, in units
// of a reference TLS server's CPU per handshake (bench/lib/tls-ref.mjs).
//   node bench/run.mjs [--quick] [--duration S] [--rounds N] [--clients N]
//                      [--only s1,s2,s3,store,features,inspected,memory,policy,inspect] [--targets floor,node-proxy,agent-egress]
//                      [--idle-tunnels N] [--churn S] [--cpu-prof] [--proxy-arg=--flag ...] [--node-arg=--flag ...]
//                      [--bare-node]   (without the V8 flags agent-egress ships with, lib/proxy.mjs PRODUCTION_NODE_ARGS)
// Needs dist/ (npx tsc -p .). Results: bench/results/bench-<time>.{json,md} and latest.{json,md}.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, readdirSync, statSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { closedLoop, s1Op, openTunnel, KeepAlive } from './lib/loadgen.mjs';
import { cpuMicros, rssKiB, hwmKiB, rssSampler } from './lib/procstat.mjs';
import { startProxy, serveFlags, hasTaskset, freePort, PRODUCTION_NODE_ARGS } from './lib/proxy.mjs';
import { ensureNodeProxy, startFloor, startNodeProxy, NODE_PROXY_VERSION } from './lib/anchors.mjs';
import { FEATURES_ENV, inspectedConnect, startTlsRef, writeFeaturesPolicy, writeInspectedPolicy } from './lib/inspected.mjs';
import { CLI } from './lib/proxy.mjs';

const BENCH = fileURLToPath(new URL('.', import.meta.url));
const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    clients: { type: 'string', default: '32' },
    only: { type: 'string', default: 's1,s2,s3,store,features,inspected,memory,policy,inspect' },
    targets: { type: 'string', default: 'floor,node-proxy,agent-egress' },
    rounds: { type: 'string' },
    'idle-tunnels': { type: 'string' },
    churn: { type: 'string' },
    'node-arg': { type: 'string', multiple: true, default: [] },
    'bare-node': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'proxy-arg': { type: 'string', multiple: true, default: [] },
  },
});
const only = new Set(opt.only.split(',').map((x) => (x === 'idle' ? 'memory' : x)));
const TARGETS = new Set(opt.targets.split(','));
const DURATION_MS = Number(opt.duration ?? (opt.quick ? 2 : 5)) * 1000;
const WARMUP_MS = opt.quick ? 500 : 1000;
const CLIENTS = Number(opt.clients);
const IDLE_TUNNELS = Number(opt['idle-tunnels'] ?? (opt.quick ? 2000 : 9000));
const CHURN_MS = Number(opt.churn ?? (opt.quick ? 15 : 60)) * 1000;
const AFTER_MS = opt.quick ? 10_000 : 30_000;
const ROUNDS = Number(opt.rounds ?? (opt.quick ? 1 : 3));
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
const results = { rounds: ROUNDS, startedAt: new Date().toISOString(), node: process.version, cpus: cpus().length, pinned: PIN, durationMs: DURATION_MS, clients: CLIENTS, runs: [], store: [], features: [], inspected: [], memory: null, refIdle: {}, policy: null, inspect: null };

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
// The inspection CA (agent-egress certs init --inspect) and the policies of the features/inspected configurations.
let inspectCa = null;
function ensureInspectCa() {
  if (inspectCa) return inspectCa;
  const dir = join(work, 'inspect-ca');
  execFileSync(process.execPath, [CLI, 'certs', 'init', '--inspect', '--dir', dir], { stdio: 'ignore' });
  inspectCa = { cert: join(dir, 'inspect-ca.pem'), key: join(dir, 'inspect-ca-key.pem'), pem: readFileSync(join(dir, 'inspect-ca.pem'), 'utf8') };
  return inspectCa;
}
const caFlags = () => ['--inspect-ca', ensureInspectCa().cert, '--inspect-ca-key', ensureInspectCa().key];
const CONFIGS = {
  production: async () => [...allow, '--log-file', join(work, 'decisions.log'), ...(await storeOn())],
  // Production plus every feature since, configured for other destinations than the bench's own.
  features: async () => [
    ...(await CONFIGS.production()),
    '--policy', writeFeaturesPolicy(work), ...caFlags(),
    '--socks-listen', `127.0.0.1:${await freePort()}`,
    '--transparent-listen', '127.0.0.1:0',
  ],
  // Production plus inspection of the origin's HTTPS port, whose certificate the proxy trusts via --upstream-ca.
  inspected: async () => [...(await CONFIGS.production()), '--policy', writeInspectedPolicy(work, ports.https), ...caFlags(), '--upstream-ca', join(work, 'cert.pem')],
  records_off: () => [...allow, '--no-decision-log', ...storeOff],
  store_off: () => [...allow, '--log-file', join(work, 'decisions-nostore.log'), ...storeOff],
};
const cfgArgs = async (name) => [...(await CONFIGS[name]()), ...opt['proxy-arg']];

const profArgs = opt['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(BENCH, 'results', 'prof')}`] : [];
async function proxyFor(name, extra = []) {
  // The shipped V8 flags unless --bare-node; --node-arg adds to them (a later flag wins in V8).
  const base = opt['bare-node'] ? [] : PRODUCTION_NODE_ARGS;
  const env = name === 'features' ? FEATURES_ENV : undefined;
  const p = await startProxy({ args: [...(await cfgArgs(name)), ...extra], cpu: PROXY_CPU, nodeArgs: [...profArgs, ...base, ...opt['node-arg']], stderrFile: true, env });
  p.label = name === 'production' ? 'agent-egress' : name;
  return p;
}
const refPorts = [ports.http, ports.https, ports.tcp];

// --- scenarios: each returns { clients, makeClient?, op }
function scenario(id, proxy) {
  const kaProxyReq = Buffer.from(`GET http://127.0.0.1:${ports.http}/small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  const kaDirectReq = Buffer.from(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`);
  const kaDirectHttpsReq = Buffer.from(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:${ports.https}\r\n\r\n`);
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
    case 's1_inspected':
      // A new inspected tunnel per op (leaf cached after the warm-up): CONNECT, TLS to the minted leaf, GET.
      return { unit: 'tunnels/s', clients: CLIENTS, op: s1Op({ proxy, originPort: ports.https, tlsInside: true, tlsOptions: { host: '127.0.0.1', ca: inspectCa.pem, rejectUnauthorized: true } }) };
    case 'inspected_ka':
      // Keep-alive GETs inside one already-open inspected tunnel per client.
      return { unit: 'req/s', clients: CLIENTS, makeClient: () => new KeepAlive(inspectedConnect(proxy.port, ports.https, inspectCa.pem)), op: (c) => c.request(kaDirectHttpsReq) };
    case 'tls_handshake':
      return { unit: 'handshakes/s', clients: CLIENTS, op: proxy.op };
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
  let cpu0 = null;
  let cpu1 = null;
  const t0 = performance.now();
  if (proxy) {
    setTimeout(() => (cpu0 = cpuMicros(proxy.pid)), WARMUP_MS);
    setTimeout(() => (cpu1 = cpuMicros(proxy.pid)), WARMUP_MS + DURATION_MS);
  }
  const sampler = proxy ? rssSampler(proxy.pid) : null;
  const r = await closedLoop({ clients: sc.clients, warmupMs: WARMUP_MS, durationMs: DURATION_MS, makeClient: sc.makeClient, op: sc.op });
  const peakKiB = sampler ? sampler.stop() : null;
  if (proxy && !proxy.alive()) throw new Error(`proxy died during ${id}:\n${proxy.stderr().slice(-2000)}`);
  const rate = sc.unit === 'MB/s' ? r.bytes / 1e6 / r.seconds : r.ops / r.seconds;
  // On a busy machine the last op can end before the end-of-window timer has run: read it now (late by
  // the same little the window's last ops were).
  if (proxy && cpu1 === null) cpu1 = cpuMicros(proxy.pid);
  if (proxy && cpu0 === null) throw new Error(`${id}: the warm-up timer never ran (${(performance.now() - t0).toFixed(0)} ms)`);
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
  // 1. S1/S2/S3: direct, the floor, node `proxy` and the production configuration, order rotated per round.
  const main = ['s1_connect', 's1_connect_tls', 's2_bulk_1', 's2_bulk_8', 's3_forward'].filter((s) => only.has(s) || only.has(s.slice(0, 2)));
  if (main.length) {
    const targets = [];
    if (TARGETS.has('floor')) targets.push(await startFloor({ allowPorts: refPorts, cpu: PROXY_CPU, nodeArgs: profArgs }));
    const pkgDir = TARGETS.has('node-proxy') ? ensureNodeProxy(log) : null;
    if (pkgDir) targets.push(await startNodeProxy({ pkgDir, allowPorts: refPorts, cpu: PROXY_CPU }));
    const proxy = TARGETS.has('agent-egress') ? await proxyFor('production') : null;
    if (proxy) targets.push(proxy);
    for (const t of targets) log(`${t.label}: ${t.command}`);
    results.productionCommand = proxy?.command;
    results.nodeProxyVersion = pkgDir ? NODE_PROXY_VERSION : null;
    await new Promise((r) => setTimeout(r, 1000));
    const idle = Object.fromEntries(targets.map((t) => [t.label, rssKiB(t.pid) / 1024]));
    const peaks = Object.fromEntries(targets.map((t) => [t.label, 0]));
    const all = [{ label: 'direct', direct: true }, ...targets];
    for (let round = 0; round < ROUNDS; round++) {
      for (const id of main) {
        for (let k = 0; k < all.length; k++) {
          const t = all[(k + round) % all.length];
          const row = await run(id, t.direct ? null : t, t.label);
          row.round = round;
          if (row.peakRssMiB) peaks[t.label] = Math.max(peaks[t.label], row.peakRssMiB);
          results.runs.push(row);
        }
      }
    }
    results.targetRss = Object.fromEntries(targets.map((t) => [t.label, { idleMiB: idle[t.label], peakMiB: peaks[t.label], hwmMiB: hwmKiB(t.pid) / 1024 }]));
    if (proxy) results.productionRss = results.targetRss['agent-egress'];
    for (const t of targets) await t.stop();
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

  // 2b. Features configured but not matched: S1 and S3 of production and features, each proxy started once,
  // scenarios and configurations interleaved (order rotated per round).
  if (only.has('features')) {
    const proxies = [await proxyFor('production'), await proxyFor('features')];
    for (const p of proxies) log(`${p.label}: ${p.command}`);
    await sleep(1000);
    for (let round = 0; round < ROUNDS; round++) {
      for (const id of ['s1_connect', 's3_forward']) {
        for (let k = 0; k < proxies.length; k++) {
          const p = proxies[(k + round) % proxies.length];
          const row = await run(id, p, p.label);
          row.round = round;
          results.features.push(row);
        }
      }
    }
    results.featuresCommand = proxies[1].command;
    for (const p of proxies) await p.stop();
  }

  // 2c. Inspected HTTPS: requests inside open inspected tunnels against S3 (plain-HTTP forward), and a new
  // inspected tunnel per op (cached leaf) against a new uninspected CONNECT + TLS tunnel; the unit of
  // "one TLS handshake" is the reference TLS server's CPU per connection, pinned where the proxies are.
  if (only.has('inspected')) {
    ensureInspectCa();
    const prod = await proxyFor('production');
    const insp = await proxyFor('inspected');
    const ref = await startTlsRef({ certFile: join(work, 'cert.pem'), keyFile: join(work, 'key.pem'), cpu: PROXY_CPU });
    for (const p of [prod, insp, ref]) log(`${p.label}: ${p.command}`);
    await sleep(1000);
    const pairs = [
      ['s3_forward', prod],
      ['inspected_ka', insp],
      ['s1_connect_tls', prod],
      ['s1_inspected', insp],
      ['tls_handshake', ref],
    ];
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < pairs.length; k++) {
        const [id, p] = pairs[(k + round) % pairs.length];
        const row = await run(id, p, p.label);
        row.round = round;
        results.inspected.push(row);
      }
    }
    results.inspectedCommand = insp.command;
    for (const p of [prod, insp, ref]) await p.stop();
  }

  // 3. Memory: idle, per idle tunnel, churn, after load; the floor's idle and per-tunnel figures for reference.
  if (only.has('memory')) {
    results.memory = await memory(IDLE_TUNNELS);
    if (TARGETS.has('floor')) results.refIdle.floor = await refMemory(() => startFloor({ allowPorts: refPorts, cpu: PROXY_CPU }), IDLE_TUNNELS);
  }

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

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Opens `want` idle CONNECT tunnels (batches of 100) to the origin's raw TCP port. */
async function openIdle(proxy, want) {
  const socks = [];
  let failed = 0;
  const BATCH = 100;
  for (let i = 0; i < want; i += BATCH) {
    const got = await Promise.allSettled(Array.from({ length: Math.min(BATCH, want - i) }, () => openTunnel(proxy.port, '127.0.0.1', ports.tcp)));
    for (const g of got) g.status === 'fulfilled' ? socks.push(g.value) : failed++;
    if (failed > 50) break;
  }
  for (const s of socks) s.on('error', () => undefined);
  return { socks, failed };
}

/** Idle RSS and KiB per idle tunnel of a reference proxy (the floor): what Node itself costs. */
async function refMemory(start, want) {
  const p = await start();
  await sleep(1000);
  const idleMiB = rssKiB(p.pid) / 1024;
  await closedLoop({ clients: 8, warmupMs: 0, durationMs: 1000, op: s1Op({ proxy: p, originPort: ports.http }) });
  await sleep(1000);
  const baseKiB = rssKiB(p.pid);
  const { socks } = await openIdle(p, want);
  await sleep(2000);
  const kib = (rssKiB(p.pid) - baseKiB) / Math.max(1, socks.length);
  for (const s of socks) s.destroy();
  await p.stop();
  log(`${p.label}: idle RSS ${fmt(idleMiB)} MiB, ${kib.toFixed(2)} KiB per idle tunnel (${socks.length})`);
  return { idleMiB, tunnels: socks.length, kibPerTunnel: kib };
}

/**
 * One production proxy through a day's shape: idle at start; `want` idle tunnels opened and closed; an S1
 * churn of CHURN_MS with RSS sampled every 250 ms (is it flat over the last 30 %?); then AFTER_MS of rest
 * (does the RSS come back near the idle figure?).
 */
async function memory(want) {
  const proxy = await proxyFor('production', ['--max-connections', String(want + 1000), '--max-connections-per-client', String(want + 1000), '--tunnel-idle-timeout', '10m']);
  await sleep(1000);
  const idleKiB = rssKiB(proxy.pid);
  // Tunnel baseline after some traffic, so lazily built state (JIT, pools, store) is already in it.
  await closedLoop({ clients: 8, warmupMs: 0, durationMs: 1000, op: s1Op({ proxy, originPort: ports.http }) });
  await sleep(1000);
  const baseKiB = rssKiB(proxy.pid);
  const { socks, failed } = await openIdle(proxy, want);
  await sleep(2000);
  const openKiB = rssKiB(proxy.pid);
  for (const s of socks) s.destroy();
  await sleep(2000);
  const closedKiB = rssKiB(proxy.pid);
  const samples = [];
  const t0 = performance.now();
  const tick = setInterval(() => samples.push([performance.now() - t0, rssKiB(proxy.pid) / 1024]), 250);
  const churn = await closedLoop({ clients: CLIENTS, warmupMs: 0, durationMs: CHURN_MS, op: s1Op({ proxy, originPort: ports.http }) });
  clearInterval(tick);
  const tail = samples.filter(([t]) => t >= CHURN_MS * 0.7);
  // Least-squares slope over the last 30 %, in MiB per 10 s: spikes of young-generation growth average out.
  const mt = tail.reduce((a, [t]) => a + t, 0) / tail.length;
  const mr = tail.reduce((a, [, r]) => a + r, 0) / tail.length;
  const slope = tail.reduce((a, [t, r]) => a + (t - mt) * (r - mr), 0) / Math.max(1e-9, tail.reduce((a, [t]) => a + (t - mt) ** 2, 0));
  const after = [];
  for (let waited = 0; waited < AFTER_MS; waited += 1000) {
    await sleep(1000);
    after.push(rssKiB(proxy.pid) / 1024);
  }
  const row = {
    idleMiB: idleKiB / 1024,
    tunnels: socks.length,
    failed,
    baseMiB: baseKiB / 1024,
    openMiB: openKiB / 1024,
    kibPerTunnel: (openKiB - baseKiB) / Math.max(1, socks.length),
    closedMiB: closedKiB / 1024,
    churnSeconds: CHURN_MS / 1000,
    churnOps: churn.ops,
    churnErrors: churn.errors,
    churnPeakMiB: Math.max(...samples.map(([, r]) => r)),
    churnTail: { fromMiB: tail[0]?.[1], toMiB: tail.at(-1)?.[1], minMiB: Math.min(...tail.map(([, r]) => r)), maxMiB: Math.max(...tail.map(([, r]) => r)), slopeMiBPer10s: slope * 10_000 },
    afterSeconds: AFTER_MS / 1000,
    afterMiB: after.at(-1),
    afterVsIdle: after.at(-1) / (idleKiB / 1024),
    hwmMiB: hwmKiB(proxy.pid) / 1024,
    command: proxy.command,
  };
  log(`memory: idle ${fmt(row.idleMiB)} MiB; ${socks.length} idle tunnels (${failed} failed) ${fmt(row.baseMiB)} -> ${fmt(row.openMiB)} MiB = ${row.kibPerTunnel.toFixed(2)} KiB each; closed ${fmt(row.closedMiB)} MiB`);
  log(`memory: churn ${row.churnSeconds} s (${churn.ops} tunnels, ${churn.errors} errors) peak ${fmt(row.churnPeakMiB)} MiB, last 30 % ${fmt(row.churnTail.fromMiB)} -> ${fmt(row.churnTail.toMiB)} MiB (slope ${row.churnTail.slopeMiBPer10s.toFixed(2)} MiB/10 s); ${row.afterSeconds} s after: ${fmt(row.afterMiB)} MiB = ${row.afterVsIdle.toFixed(2)}× idle`);
  await proxy.stop();
  return row;
}

// --- report
const lines = [];
if (results.runs.length) {
  const med = (id, target, key) => {
    const xs = results.runs.filter((r) => r.scenario === id && r.target === target && r[key] !== null).map((r) => r[key]);
    return xs.length ? median(xs) : null;
  };
  const names = [...new Set(results.runs.map((r) => r.target))].filter((n) => n !== 'direct');
  const ratio = (x, y) => (x && y ? `${(x / y).toFixed(2)}×` : '-');
  lines.push(`S1-S3, ${CLIENTS} clients (S2: 1 or 8 tunnels), ${ROUNDS} round(s) × ${DURATION_MS / 1000} s measured per target, order rotated per round, medians; proxies ${PIN ? 'pinned to CPU 0, load generator and origin on CPU 1' : 'unpinned'}`);
  lines.push('', `| scenario | unit | direct | ${names.join(' | ')} | agent-egress / direct | agent-egress / floor |`, `|---|---|---:|${names.map(() => '---:|').join('')}---:|---:|`);
  const ids = [...new Set(results.runs.map((r) => r.scenario))];
  for (const id of ids) {
    const unit = results.runs.find((r) => r.scenario === id).unit;
    const d = med(id, 'direct', 'rate');
    lines.push(`| ${id} | ${unit} | ${fmt(d)} | ${names.map((n) => fmt(med(id, n, 'rate'))).join(' | ')} | ${ratio(med(id, 'agent-egress', 'rate'), d)} | ${ratio(med(id, 'agent-egress', 'rate'), med(id, 'floor', 'rate'))} |`);
  }
  lines.push('', 'Proxy CPU per operation, µs (S2: per 10 MB GET); p50 / p99 ms of agent-egress:', '', `| scenario | ${names.join(' | ')} | agent-egress / floor | agent-egress / node-proxy | floor / node-proxy | agent-egress p50 / p99 ms |`, `|---|${names.map(() => '---:|').join('')}---:|---:|---:|---:|`);
  for (const id of ids) {
    const c = (n) => med(id, n, 'proxyCpuUsPerOp');
    lines.push(`| ${id} | ${names.map((n) => fmt(c(n))).join(' | ')} | ${ratio(c('agent-egress'), c('floor'))} | ${ratio(c('agent-egress'), c('node-proxy'))} | ${ratio(c('floor'), c('node-proxy'))} | ${fmt(med(id, 'agent-egress', 'p50ms'))} / ${fmt(med(id, 'agent-egress', 'p99ms'))} |`);
  }
  const errs = results.runs.filter((r) => r.errors).map((r) => `${r.scenario}/${r.target}/round ${r.round}: ${r.errors}`);
  if (errs.length) lines.push('', `errors: ${errs.join(', ')}`);
  lines.push('', '| RSS MiB | ' + names.join(' | ') + ' |', '|---|' + names.map(() => '---:|').join(''));
  for (const [k, label] of [['idleMiB', 'idle at start'], ['peakMiB', 'peak, sampled every 100 ms'], ['hwmMiB', 'VmHWM at end']]) lines.push(`| ${label} | ${names.map((n) => fmt(results.targetRss[n]?.[k])).join(' | ')} |`);
}
if (results.memory) {
  const m = results.memory;
  const f = results.refIdle.floor;
  lines.push('', `Memory of the production configuration (one process, in this order)${f ? '; the floor for reference' : ''}:`, '', '| figure | agent-egress | target |' + (f ? ' floor |' : ''), '|---|---:|---|' + (f ? '---:|' : ''));
  const row = (label, v, target, fv = '') => lines.push(`| ${label} | ${v} | ${target} |` + (f ? ` ${fv} |` : ''));
  row('RSS idle at start', `${fmt(m.idleMiB)} MiB`, '≤ 50 MiB', f ? `${fmt(f.idleMiB)} MiB` : '');
  row(`per idle tunnel at ${m.tunnels.toLocaleString('en-US')} tunnels (${m.failed} failed)`, `${m.kibPerTunnel.toFixed(2)} KiB (${fmt(m.baseMiB)} → ${fmt(m.openMiB)} MiB)`, '≤ 8 KiB', f ? `${f.kibPerTunnel.toFixed(2)} KiB` : '');
  row('2 s after closing them', `${fmt(m.closedMiB)} MiB`, '');
  row(`${m.churnSeconds} s S1 churn, ${CLIENTS} clients: peak`, `${fmt(m.churnPeakMiB)} MiB (${m.churnOps.toLocaleString('en-US')} tunnels)`, '≤ 120 MiB (peak under the harness)');
  row('churn, last 30 %: first → last sample (min–max)', `${fmt(m.churnTail.fromMiB)} → ${fmt(m.churnTail.toMiB)} MiB (${fmt(m.churnTail.minMiB)}–${fmt(m.churnTail.maxMiB)}), slope ${m.churnTail.slopeMiBPer10s.toFixed(2)} MiB / 10 s`, 'flat');
  row(`RSS ${m.afterSeconds} s after the churn`, `${fmt(m.afterMiB)} MiB = ${m.afterVsIdle.toFixed(2)}× idle`, '≤ 1.25× idle');
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
if (results.features.length) {
  const cpu = (id, target) => median(results.features.filter((r) => r.scenario === id && r.target === target).map((r) => r.proxyCpuUsPerOp));
  const rate = (id, target) => median(results.features.filter((r) => r.scenario === id && r.target === target).map((r) => r.rate));
  lines.push('', `Features configured, not matched (inspection CA + inspect rule, request rules, brokered secret, SOCKS5 and transparent listeners; ${ROUNDS} interleaved rounds, medians):`, '', '| scenario | production µs/op | features µs/op | features / production | production rate | features rate |', '|---|---:|---:|---:|---:|---:|');
  for (const id of ['s1_connect', 's3_forward']) {
    const [p, f] = [cpu(id, 'agent-egress'), cpu(id, 'features')];
    lines.push(`| ${id} | ${fmt(p)} | ${fmt(f)} | ${(f / p).toFixed(3)}× | ${fmt(rate(id, 'agent-egress'))} | ${fmt(rate(id, 'features'))} |`);
  }
}
if (results.inspected.length) {
  const cpu = (id) => median(results.inspected.filter((r) => r.scenario === id).map((r) => r.proxyCpuUsPerOp));
  const [s3, ka, tlsT, inspT, hs] = ['s3_forward', 'inspected_ka', 's1_connect_tls', 's1_inspected', 'tls_handshake'].map(cpu);
  lines.push('', `Inspected HTTPS (${ROUNDS} interleaved rounds, medians; proxy CPU µs per op):`, '', '| figure | µs/op | target |', '|---|---:|---|');
  lines.push(`| S3 plain-HTTP forward, per request | ${fmt(s3)} | |`);
  lines.push(`| request inside an open inspected tunnel | ${fmt(ka)} = ${(ka / s3).toFixed(2)}× S3 | ≤ 2× |`);
  lines.push(`| new uninspected CONNECT + TLS tunnel + GET | ${fmt(tlsT)} | |`);
  lines.push(`| new inspected tunnel + GET, cached leaf | ${fmt(inspT)} = +${fmt(inspT - tlsT)} µs | |`);
  lines.push(`| one TLS handshake (reference TLS server, per connection) | ${fmt(hs)} | |`);
  lines.push(`| inspected − uninspected, in TLS handshakes | ${((inspT - tlsT) / hs).toFixed(2)} | ≤ 1 |`);
  const errs = results.inspected.filter((r) => r.errors).map((r) => `${r.scenario}/round ${r.round}: ${r.errors} (${r.firstErrors.join('; ')})`);
  if (errs.length) lines.push('', `errors: ${errs.join(', ')}`);
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
