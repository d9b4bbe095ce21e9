// Load for the features and inspected-HTTPS scenarios (issue 15): the policy files they run under, TLS
// inside inspected tunnels (the client trusts the bench's inspection CA), and the reference TLS server.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import tls from 'node:tls';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openTunnel } from './loadgen.mjs';

const LIB = fileURLToPath(new URL('.', import.meta.url));

/** The brokered secret's env var and value for the features configuration (a bench-only dummy). */
export const FEATURES_ENV = { AE_BENCH_BROKERED_TOKEN: 'bench-dummy-token-not-a-secret' };

/**
 * Features configured but not matched: an inspected, brokered, request-ruled API and a read-only plain
 * HTTP site, both on names the bench never asks for; the bench's own traffic is decided by the --allow
 * flag rules as in production.
 */
export function writeFeaturesPolicy(dir) {
  const file = join(dir, 'features.yaml');
  writeFileSync(
    file,
    `version: 1
secrets:
  - name: bench-api
    env: AE_BENCH_BROKERED_TOKEN
    placeholder: agent-egress-placeholder-bench
rules:
  - name: inspected-api
    action: allow
    hosts: [api.inspected.example]
    inspect: true
    methods: [GET, POST]
    paths: [/v1/**, /v2/items/*]
    secrets: [bench-api]
    headers:
      x-api-key: "\${secret:bench-api}"
  - name: inspected-no-admin
    action: deny
    hosts: [api.inspected.example]
    paths: [/v1/admin/**]
  - name: read-only-docs
    action: allow
    hosts: [docs.other.example]
    ports: [80]
    methods: [GET, HEAD]
    paths: [/docs/**]
  - name: no-uploads
    action: deny
    hosts: ["*.uploads.example"]
    methods: [POST, PUT]
`,
  );
  return file;
}

/** Inspection of the origin's HTTPS port (an IP target: the origin certificate has an IP SAN). */
export function writeInspectedPolicy(dir, httpsPort) {
  const file = join(dir, 'inspected.yaml');
  writeFileSync(
    file,
    `version: 1
rules:
  - name: inspected-origin
    action: allow
    cidrs: [127.0.0.1/32]
    ports: [${httpsPort}]
    inspect: true
`,
  );
  return file;
}

const tlsTo = (raw, caPem) =>
  new Promise((resolve, reject) => {
    // IP target: no SNI; the leaf's IP SAN is checked against host.
    const t = tls.connect({ socket: raw, host: '127.0.0.1', servername: '', ca: caPem, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, () => resolve(t));
    t.once('error', (e) => {
      raw.destroy();
      reject(e);
    });
  });

/** A keep-alive connection inside one inspected tunnel: CONNECT, then TLS to the proxy's minted leaf. */
export function inspectedConnect(proxyPort, originPort, caPem) {
  return async () => {
    const raw = await openTunnel(proxyPort, '127.0.0.1', originPort);
    raw.setNoDelay(true);
    return tlsTo(raw, caPem);
  };
}

/**
 * Starts bench/lib/tls-ref.mjs (pinned to `cpu`) and returns it shaped like a proxy target, plus the op:
 * a new TCP connection and a full TLS 1.3 handshake, waiting for the server's end.
 */
export async function startTlsRef({ certFile, keyFile, cpu }) {
  const cmd = [process.execPath, join(LIB, 'tls-ref.mjs'), certFile, keyFile];
  if (cpu !== null) cmd.unshift('taskset', '-c', String(cpu));
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const { port } = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('tls-ref did not start')), 10_000);
    createInterface({ input: child.stdout }).once('line', (l) => {
      clearTimeout(t);
      resolve(JSON.parse(l));
    });
  });
  const op = () =>
    new Promise((resolve, reject) => {
      const t = tls.connect({ host: '127.0.0.1', port, servername: '', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      const timer = setTimeout(() => t.destroy(new Error('handshake timed out')), 10_000);
      t.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      t.on('data', () => undefined);
      t.on('end', () => {
        clearTimeout(timer);
        t.destroy();
        resolve({ bytes: 0 });
      });
    });
  return {
    label: 'tls-ref',
    port,
    pid: child.pid,
    command: cmd.join(' '),
    op,
    alive: () => child.exitCode === null && child.signalCode === null,
    stderr: () => '',
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

