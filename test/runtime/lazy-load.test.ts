import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { rawExchange } from '../helpers/raw.js';
import { connectRequest, getRequest } from '../helpers/requests.js';

// What a plain `serve` (JSON lines, store, admin API on, no inspection, no DNS listener) must not load
// before it is used: each of these costs MiB of RSS at idle (docs/performance.md).
const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');
const HOOK = join(ROOT, 'test/fixtures/record-loads.mjs');
const dir = mkdtempSync(join(tmpdir(), 'ae-lazy-'));
const loads = join(dir, 'loads.txt');
const files = join(dir, 'files.txt');
const loadedFiles = (): string[] => (existsSync(files) ? readFileSync(files, 'utf8').split('\n').filter(Boolean) : []);
const loaded = () => new Set(existsSync(loads) ? readFileSync(loads, 'utf8').split('\n').filter(Boolean) : []);

function serve(args: string[]): Promise<{ child: ChildProcess; stderr: () => string }> {
  return new Promise((ok, fail) => {
    const child = spawn('node', ['--import', HOOK, BIN, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, AE_LOAD_LOG: loads, AE_FILE_LOG: files } });
    let err = '';
    const timer = setTimeout(() => fail(new Error(`serve did not start: ${err}`)), 20_000);
    child.stderr!.on('data', (d) => {
      err += d;
      if (err.includes('agent-egress proxy listening')) {
        clearTimeout(timer);
        ok({ child, stderr: () => err });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`serve exited early (${code}): ${err}`));
    });
  });
}

const listenOf = (stderr: string, key: 'listen' | 'admin'): number => {
  const line = stderr.split('\n').find((l) => l.includes('agent-egress proxy listening'))!;
  return Number((JSON.parse(line)[key] as string).split(':').pop());
};

let origin: Origin;
let proc: { child: ChildProcess; stderr: () => string };
beforeAll(async () => {
  origin = await startHttpOrigin();
  proc = await serve(['--listen', '127.0.0.1:0', '--allow', `127.0.0.1/32:${origin.port}`, '--allow-address', '127.0.0.1/32', '--log-file', join(dir, 'd.log'), '--data-dir', join(dir, 'data'), '--admin-listen', '127.0.0.1:0']);
}, 30_000);
afterAll(async () => {
  proc?.child.kill('SIGTERM');
  await origin?.close();
});

describe('serve loads what it does not use only when it is first used', () => {
  it('a CONNECT tunnel loads neither fastify, undici, dns-packet nor the X.509 library', async () => {
    const port = listenOf(proc.stderr(), 'listen');
    const got = await rawExchange(port, connectRequest(`127.0.0.1:${origin.port}`) + `GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got).toContain('hello');
    const l = loaded();
    expect(l.has('commander')).toBe(true); // the hook does record what is loaded
    for (const pkg of ['fastify', 'undici', 'dns-packet', '@peculiar/x509']) expect(l.has(pkg), pkg).toBe(false);
    // The policy validator is compiled ahead of time: ajv's compiler is not loaded to check the policy.
    expect([...l].filter((p) => p === 'ajv')).toEqual([]);
  });

  it('a single-process serve loads neither the cluster runtime, the other commands, the firewall tools nor the capture listeners it was not given', async () => {
    const port = listenOf(proc.stderr(), 'listen');
    const got = await rawExchange(port, connectRequest(`127.0.0.1:${origin.port}`) + `GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    const files = loadedFiles();
    expect(files.some((f) => f.endsWith('/dist/cli/commands/serve.js'))).toBe(true); // the hook does see our own modules
    for (const f of ['cli/commands/check.js', 'cli/commands/log.js', 'cli/commands/policy.js', 'cli/commands/firewall.js', 'cli/commands/certs.js', 'cli/commands/approvals.js', 'runtime/cluster.js', 'admin/client.js', 'firewall/iptables.js', 'firewall/apply.js', 'runtime/firewall-metrics.js', 'capture/socks5.js', 'capture/transparent.js', 'certs/init.js']) {
      expect(files.some((x) => x.endsWith(`/dist/${f}`)), f).toBe(false);
    }
  });

  it('the first admin request builds the admin API and is answered; the first plain request loads undici and is forwarded', async () => {
    const admin = listenOf(proc.stderr(), 'admin');
    const token = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
    const [health, unauth, authed] = await Promise.all([
      rawExchange(admin, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'),
      rawExchange(admin, 'GET /api/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'),
      rawExchange(admin, `GET /api/decisions?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`),
    ]);
    expect(health).toMatch(/^HTTP\/1\.1 200 /);
    expect(unauth).toMatch(/^HTTP\/1\.1 401 /);
    expect(authed).toMatch(/^HTTP\/1\.1 200 /);
    expect(loaded().has('fastify')).toBe(true);
    const port = listenOf(proc.stderr(), 'listen');
    const plain = await rawExchange(port, getRequest(`http://127.0.0.1:${origin.port}/hello`));
    expect(plain).toMatch(/^HTTP\/1\.1 200 /);
    expect(loaded().has('undici')).toBe(true);
  });

  it('an admin address already in use still stops the start, before anything is loaded for it', async () => {
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    const child = spawn('node', [BIN, 'serve', '--listen', '127.0.0.1:0', '--allow', '127.0.0.1/32:1', '--data-dir', join(dir, 'data2'), '--admin-listen', `127.0.0.1:${port}`, '--no-decision-log'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    busy.close();
    expect(code).not.toBe(0);
    expect(err).toMatch(/EADDRINUSE/);
  }, 20_000);
});
