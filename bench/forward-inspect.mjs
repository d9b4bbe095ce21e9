#!/usr/bin/env node
// Issue 15: "a request inside an already-open inspected tunnel costs at most 2× a plain-HTTP forwarded
// request". One agent-egress (production configuration: records, store, admin API), pinned to CPU 0, with
// an inspect: true rule for the origin's HTTPS port and a plain allow for its HTTP port. Measured windows
// alternate: plain keep-alive GETs (S3) and keep-alive GETs inside inspected tunnels opened before the
// window (each client one tunnel, TLS to the proxy's minted leaf). Reports proxy CPU µs per request.
//   node bench/forward-inspect.mjs [--root DIR] [--windows 4] [--seconds 3] [--clients 32]
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
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
    root: { type: 'string', default: join(BENCH, '..') },
    windows: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '32' },
    'cpu-prof': { type: 'boolean', default: false },
  },
});
const PIN = hasTaskset() && cpus().length >= 2;
if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
const work = mkdtempSync(join(tmpdir(), 'ae-fwd-inspect-'));
const cli = join(resolve(opt.root), 'bin/agent-egress.js');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(work, 'key.pem'), '-out', join(work, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
execFileSync(process.execPath, [cli, 'certs', 'init', '--inspect', '--dir', join(work, 'ca')], { stdio: 'ignore' });
const caPem = readFileSync(join(work, 'ca', 'inspect-ca.pem'));
const originCmd = [process.execPath, join(BENCH, 'lib/origin.mjs'), join(work, 'cert.pem'), join(work, 'key.pem')];
if (PIN) originCmd.unshift('taskset', '-c', '1');
const origin = spawn(originCmd[0], originCmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
const ports = await new Promise((r) => createInterface({ input: origin.stdout }).once('line', (l) => r(JSON.parse(l))));
process.on('exit', () => origin.kill());
process.on('unhandledRejection', (e) => {
  console.error(e);
  process.exit(1);
});
const policy = join(work, 'policy.yaml');
writeFileSync(
  policy,
  `version: 1
rules:
  - name: inspected
    action: allow
    cidrs: [127.0.0.1/32]
    ports: [${ports.https}]
    inspect: true
  - name: plain
    action: allow
    cidrs: [127.0.0.1/32]
    ports: [${ports.http}]
`,
);
const prof = opt['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(BENCH, 'results', 'prof')}`] : [];
const args = ['--policy', policy, '--allow-address', '127.0.0.1/32', '--inspect-ca', join(work, 'ca', 'inspect-ca.pem'), '--inspect-ca-key', join(work, 'ca', 'inspect-ca-key.pem'), '--upstream-ca', join(work, 'cert.pem'), '--log-file', join(work, 'decisions.log'), '--data-dir', join(work, 'data'), '--admin-listen', `127.0.0.1:${await freePort()}`];
const proxy = await startProcess({ label: 'agent-egress', argv: [process.execPath, ...prof, ...PRODUCTION_NODE_ARGS, cli, 'serve'], portArgs: (port) => ['--listen', `127.0.0.1:${port}`, ...args], cpu: PIN ? 0 : null });

process.on('exit', () => proxy.alive() && process.kill(proxy.pid, 'SIGKILL'));
const plainOpen = () =>
  new Promise((res, rej) => {
    const s = net.connect(proxy.port, '127.0.0.1', () => res(s));
    s.once('error', rej);
  });
/** A socket to the proxy, CONNECTed to the origin's HTTPS port, with TLS to the proxy's minted leaf on top. */
const inspectedOpen = () =>
  new Promise((res, rej) => {
    const s = net.connect(proxy.port, '127.0.0.1', () => s.write(`CONNECT 127.0.0.1:${ports.https} HTTP/1.1\r\nHost: 127.0.0.1:${ports.https}\r\n\r\n`));
    s.once('error', rej);
    let head = '';
    const onData = (c) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      if (!head.startsWith('HTTP/1.1 200')) return rej(new Error(`CONNECT refused: ${head.slice(0, 80)}`));
      const t = tls.connect({ socket: s, host: '127.0.0.1', ca: caPem, ALPNProtocols: ['http/1.1'] }, () => res(t));
      t.once('error', rej);
    };
    s.on('data', onData);
  });
const SCENARIOS = {
  plain: { open: plainOpen, req: Buffer.from(`GET http://127.0.0.1:${ports.http}/small HTTP/1.1\r\nHost: 127.0.0.1:${ports.http}\r\n\r\n`) },
  inspected: { open: inspectedOpen, req: Buffer.from(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:${ports.https}\r\n\r\n`) },
};

async function window(name, ms) {
  const sc = SCENARIOS[name];
  // Connections (and, inspected, tunnels and TLS sessions) open before the measured window starts.
  // One after another: 32 TLS handshakes at once on a loaded machine outlast the proxy's connect timeout.
  const clients = [];
  for (let k = 0; k < Number(opt.clients); k++) {
    const c = new KeepAlive(sc.open);
    await c.request(sc.req);
    clients.push(c);
  }
  let i = 0;
  let c0 = 0;
  let c1 = 0;
  setTimeout(() => (c0 = cpuMicros(proxy.pid)), 300);
  setTimeout(() => (c1 = cpuMicros(proxy.pid)), 300 + ms);
  const r = await closedLoop({ clients: clients.length, warmupMs: 300, durationMs: ms, makeClient: () => clients[i++], op: (c) => c.request(sc.req) });
  return { us: (c1 - c0) / r.ops, rate: r.ops / r.seconds, errors: r.errors, firstErrors: r.firstErrors };
}

const ms = Number(opt.seconds) * 1000;
for (const name of Object.keys(SCENARIOS)) await window(name, ms); // warm-up
const out = { plain: [], inspected: [] };
for (let k = 0; k < Number(opt.windows); k++) {
  for (const name of k % 2 ? ['inspected', 'plain'] : ['plain', 'inspected']) {
    const w = await window(name, ms);
    out[name].push(w.us);
    console.log(`${name.padEnd(9)} ${w.us.toFixed(1)} µs/req ${Math.round(w.rate)} req/s errors=${w.errors}${w.errors ? ` (${w.firstErrors.join('; ')})` : ''} load=${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
  }
}
const med = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
console.log(`median plain ${med(out.plain).toFixed(1)} µs/req, inspected ${med(out.inspected).toFixed(1)} µs/req, ratio ${(med(out.inspected) / med(out.plain)).toFixed(2)} (${opt.root})`);
await proxy.stop();
origin.kill();
