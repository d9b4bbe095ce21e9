import { execFile } from 'node:child_process';
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
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

// A new inspected tunnel to an origin this agent reached moments ago reuses the verified upstream
// connection (pooled per agent, vetted address, port and name); when there is none, the session verified
// for the same address, port and name is resumed. Neither ever carries over to another name or agent.
const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ae-inspect-sessions-'));

/** Each TLS connection the origin accepted: the SNI it was for and whether it resumed a session. */
const handshakes: { sni: string; resumed: boolean }[] = [];
/** Each request the origin answered: its path and the local port of the connection it came on. */
const requests: { path: string; conn: number }[] = [];
let conns = 0;
const CONN = Symbol('conn');
let origin: ReturnType<typeof createHttpsServer>;
let originPort = 0;
let dns: TestDnsServer;
let proxy: TestProxy;
let proxyUrl = '';

beforeAll(async () => {
  const cert = testCert();
  writeFileSync(join(dir, 'origin.pem'), cert.cert);
  origin = createHttpsServer(cert, (req, res) => {
    req.resume();
    requests.push({ path: req.url ?? '', conn: (req.socket as unknown as { [CONN]: number })[CONN] });
    // /close: the origin ends the connection after answering, so the next tunnel must connect anew.
    if (req.url === '/close') res.setHeader('connection', 'close');
    res.setHeader('content-type', 'text/plain');
    res.end('ok');
  });
  origin.on('secureConnection', (s: TLSSocket) => {
    (s as unknown as { [CONN]: number })[CONN] = ++conns;
    handshakes.push({ sni: String((s as unknown as { servername?: string }).servername ?? ''), resumed: s.isSessionReused() });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  dns = await startTestDnsServer();
  for (const n of ['a', 'b', 'c']) dns.set(`${n}.allowed.test`, { A: ['127.0.0.1'] });
  await createInspectionCa(dir, { days: 2, force: false });
  // token_env is read when the policy compiles (this file runs in its own worker).
  process.env.AE_TEST_AGENT_ONE = 'token-one';
  process.env.AE_TEST_AGENT_TWO = 'token-two';
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: inspected
    action: allow
    hosts: [a.allowed.test, b.allowed.test, c.allowed.test]
    ports: [${originPort}]
    inspect: true
agents:
  - name: one
    token_env: AE_TEST_AGENT_ONE
    shared_rules: true
  - name: two
    token_env: AE_TEST_AGENT_TWO
    shared_rules: true
`,
  );
  proxy = await startTestProxy({
    policyFile: policy,
    flags: { allow: [], deny: [], allowAddress: [] },
    dnsServers: [`127.0.0.1:${dns.port}`],
    inspect: { caFile: join(dir, 'inspect-ca.pem'), caKeyFile: join(dir, 'inspect-ca-key.pem'), upstreamCaFiles: [join(dir, 'origin.pem')] },
  });
  proxyUrl = proxy.url;
}, 30_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all([closeServer(origin as never), dns?.close()]);
});

/** One curl process: a new inspected tunnel, one request, then the tunnel closes. */
async function get(host: string, path = '/x', user?: string): Promise<string> {
  const auth = user ? ['--proxy-user', user] : [];
  const r = await run('curl', ['-sS', '--max-time', '5', '--proxy', proxyUrl, ...auth, '--cacert', join(dir, 'inspect-ca.pem'), `https://${host}:${originPort}${path}`], { encoding: 'utf8' });
  return r.stdout;
}

const since = <T>(xs: T[], n: number): T[] => xs.slice(n);

describe('upstream TLS of inspected tunnels', () => {
  it('new tunnels of one agent to one origin reuse its verified connection; another name gets its own', async () => {
    const h = handshakes.length;
    const r = requests.length;
    for (const host of ['a.allowed.test', 'a.allowed.test', 'a.allowed.test', 'b.allowed.test', 'b.allowed.test']) expect(await get(host)).toBe('ok');
    expect(since(handshakes, h)).toEqual([
      { sni: 'a.allowed.test', resumed: false },
      { sni: 'b.allowed.test', resumed: false },
    ]);
    const reqs = since(requests, r);
    expect(reqs.map((x) => x.conn)).toEqual([reqs[0].conn, reqs[0].conn, reqs[0].conn, reqs[3].conn, reqs[3].conn]);
    expect(reqs[3].conn).not.toBe(reqs[0].conn);
  });

  it('when the origin closed the connection, the next tunnel resumes the session verified for that name', async () => {
    const h = handshakes.length;
    for (let i = 0; i < 3; i++) expect(await get('c.allowed.test', '/close')).toBe('ok');
    expect(since(handshakes, h)).toEqual([
      { sni: 'c.allowed.test', resumed: false },
      { sni: 'c.allowed.test', resumed: true },
      { sni: 'c.allowed.test', resumed: true },
    ]);
  });

  it('two agents never share an upstream connection', async () => {
    const r = requests.length;
    expect(await get('a.allowed.test', '/one', 'one:token-one')).toBe('ok');
    expect(await get('a.allowed.test', '/two', 'two:token-two')).toBe('ok');
    expect(await get('a.allowed.test', '/one-again', 'one:token-one')).toBe('ok');
    const [one, two, again] = since(requests, r);
    expect([one.path, two.path, again.path]).toEqual(['/one', '/two', '/one-again']);
    expect(two.conn).not.toBe(one.conn);
    expect(again.conn).toBe(one.conn);
  });
});
