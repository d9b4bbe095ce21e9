import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInspectionCa } from '../../src/inspect/ca.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { closeServer, testCert } from '../helpers/origin.js';

// A new inspected tunnel costs the proxy an upstream TLS handshake; resuming the session it verified for
// the same origin (address, port and name) spares the certificate work, and a session never carries
// over to another name.
const run = promisify(execFile);
const BIN = new URL('../../bin/agent-egress.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ae-inspect-sessions-'));

/** Each TLS connection the origin accepted: the SNI it was for and whether it resumed a session. */
const handshakes: { sni: string; resumed: boolean }[] = [];
let origin: ReturnType<typeof createHttpsServer>;
let originPort = 0;
let dns: TestDnsServer;
let child: ChildProcess;
let stderr = '';
let proxyUrl = '';

beforeAll(async () => {
  const cert = testCert();
  writeFileSync(join(dir, 'origin.pem'), cert.cert);
  origin = createHttpsServer(cert, (req, res) => {
    req.resume();
    res.setHeader('content-type', 'text/plain');
    res.end('ok');
  });
  origin.on('secureConnection', (s: TLSSocket) => handshakes.push({ sni: String((s as unknown as { servername?: string }).servername ?? ''), resumed: s.isSessionReused() }));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  dns = await startTestDnsServer();
  for (const n of ['a', 'b']) dns.set(`${n}.allowed.test`, { A: ['127.0.0.1'] });
  await createInspectionCa(dir, { days: 2, force: false });
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: inspected
    action: allow
    hosts: [a.allowed.test, b.allowed.test]
    ports: [${originPort}]
    inspect: true
`,
  );
  child = spawn(
    'node',
    [BIN, 'serve', '--policy', policy, '--listen', '127.0.0.1:0', '--dns-server', `127.0.0.1:${dns.port}`, '--inspect-ca', join(dir, 'inspect-ca.pem'),
      '--inspect-ca-key', join(dir, 'inspect-ca-key.pem'), '--upstream-ca', join(dir, 'origin.pem'), '--no-decision-log', '--no-store'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 15_000);
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (stderr.includes('agent-egress proxy listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`serve exited: ${stderr}`)));
  });
  proxyUrl = `http://127.0.0.1:${/"listen":"127\.0\.0\.1:(\d+)"/.exec(stderr)![1]}`;
}, 30_000);

afterAll(async () => {
  child?.kill('SIGTERM');
  await Promise.all([closeServer(origin as never), dns?.close()]);
});

/** One curl process: a new inspected tunnel, one request, then the tunnel closes. */
async function get(host: string): Promise<string> {
  const r = await run('curl', ['-sS', '--max-time', '5', '--proxy', proxyUrl, '--cacert', join(dir, 'inspect-ca.pem'), `https://${host}:${originPort}/x`], { encoding: 'utf8' });
  return r.stdout;
}

describe('upstream TLS of inspected tunnels', () => {
  it('a new tunnel to the same origin resumes the session the first one verified; another name starts its own', async () => {
    expect(await get('a.allowed.test')).toBe('ok');
    expect(await get('a.allowed.test')).toBe('ok');
    expect(await get('a.allowed.test')).toBe('ok');
    expect(await get('b.allowed.test')).toBe('ok');
    expect(await get('b.allowed.test')).toBe('ok');
    expect(handshakes).toEqual([
      { sni: 'a.allowed.test', resumed: false },
      { sni: 'a.allowed.test', resumed: true },
      { sni: 'a.allowed.test', resumed: true },
      { sni: 'b.allowed.test', resumed: false },
      { sni: 'b.allowed.test', resumed: true },
    ]);
  });
});
