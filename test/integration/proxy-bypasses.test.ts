import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

/**
 * The data-plane bypasses of issue 9: each class is a row of a table so it can grow. Every test runs the
 * real proxy against a real origin on loopback, over raw sockets where the bytes matter.
 */
let dns: TestDnsServer;
let origin: Origin;
const dir = mkdtempSync(join(tmpdir(), 'ae-bypass-'));

function policyFile(name: string, yaml: string): string {
  const f = join(dir, name);
  writeFileSync(f, yaml);
  return f;
}

beforeAll(async () => {
  dns = await startTestDnsServer({
    'ro.test': { A: ['127.0.0.1'] },
    'open.test': { A: ['127.0.0.1'] },
    'mixed.test': { A: ['127.0.0.1'] },
    'a.glob.test': { A: ['127.0.0.1'] },
    'agent.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
  });
  origin = await startHttpOrigin();
});
afterAll(async () => {
  await origin?.close();
  await dns?.close();
});

describe('methods through CONNECT (fail closed)', () => {
  let proxy: TestProxy;
  let report: TestProxy;
  const rules = () => `address_guard: { exempt: [127.0.0.1/32] }
rules:
  - {name: ro, action: allow, hosts: [ro.test], ports: [${origin.port}], methods: [GET, HEAD]}
  - {name: open, action: allow, hosts: [open.test], ports: [${origin.port}]}
  - {name: open-no-post, action: deny, hosts: [open.test], methods: [POST, PUT, DELETE]}
  - {name: mixed-broad, action: allow, hosts: [mixed.test], ports: [${origin.port}]}
  - {name: mixed-get, action: allow, hosts: [mixed.test], ports: [${origin.port}], methods: [GET]}
  - {name: glob-ro, action: allow, hosts: ["*.glob.test"], ports: [${origin.port}], methods: [GET]}
  - {name: loop-ro, action: allow, cidrs: [127.0.0.1/32], ports: [${origin.port}], methods: [GET]}
agents:
  - name: reader
    sources: [127.0.0.2/32]
    rules:
      - {name: reader-ro, action: allow, hosts: [agent.test], ports: [${origin.port}], methods: [GET]}
`;
  beforeAll(async () => {
    proxy = await startTestProxy({ policyFile: policyFile('methods.yaml', `version: 1\n${rules()}`), dnsServers: [`127.0.0.1:${dns.port}`] });
    report = await startTestProxy({ policyFile: policyFile('methods-report.yaml', `version: 1\nmode: report\n${rules()}`), dnsServers: [`127.0.0.1:${dns.port}`] });
  });
  afterAll(async () => {
    await proxy?.close();
    await report?.close();
  });

  it.each([
    // host, expected CONNECT status, reason, rule
    ['ro.test', 403, 'method_not_allowed', 'ro'],
    ['open.test', 403, 'method_not_allowed', 'open-no-post'],
    ['mixed.test', 200, 'rule_allow', 'mixed-broad'],
    ['a.glob.test', 403, 'method_not_allowed', 'glob-ro'],
    ['127.0.0.1', 403, 'method_not_allowed', 'loop-ro'],
  ] as const)('CONNECT %s -> %s %s', async (host, status, reason, rule) => {
    const before = origin.seen.length;
    const res = await rawExchange(proxy.port, `CONNECT ${host}:${origin.port} HTTP/1.1\r\nHost: ${host}:${origin.port}\r\n\r\nPOST /inside HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\n\r\n`, 1_500);
    expect(res.startsWith(`HTTP/1.1 ${status} `)).toBe(true);
    const rec = await proxy.sink.waitFor((r) => r.method === 'CONNECT' && r.host === host);
    expect(rec).toMatchObject({ reason, rule, verdict: status === 200 ? 'allow' : 'deny' });
    if (status === 403) {
      expect(res).toContain('method_not_allowed');
      // The pipelined POST never reached the origin.
      expect(origin.seen.length).toBe(before);
    } else {
      expect(origin.seen.slice(before).map((s) => s.method)).toEqual(['POST']);
    }
  });

  it('a per-agent rule with methods refuses that agent its tunnel', async () => {
    const res = await new Promise<string>((resolve, reject) => {
      const s = connect({ port: proxy.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      let buf = '';
      s.on('data', (d) => (buf += d.toString('latin1')));
      s.on('close', () => resolve(buf));
      s.on('error', reject);
      s.setTimeout(3_000, () => s.destroy());
      s.write(`CONNECT agent.test:${origin.port} HTTP/1.1\r\nHost: agent.test:${origin.port}\r\n\r\n`);
    });
    expect(res.startsWith('HTTP/1.1 403 ')).toBe(true);
    const rec = await proxy.sink.waitFor((r) => r.method === 'CONNECT' && r.host === 'agent.test');
    expect(rec).toMatchObject({ agent: 'reader', reason: 'method_not_allowed', rule: 'reader-ro' });
  });

  it('the same rules still judge plain HTTP by its method', async () => {
    const get = await rawExchange(proxy.port, `GET http://ro.test:${origin.port}/ HTTP/1.1\r\nHost: ro.test:${origin.port}\r\nConnection: close\r\n\r\n`);
    expect(get.startsWith('HTTP/1.1 200 ')).toBe(true);
    const post = await rawExchange(proxy.port, `POST http://ro.test:${origin.port}/ HTTP/1.1\r\nHost: ro.test:${origin.port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(post.startsWith('HTTP/1.1 403 ')).toBe(true);
    expect(post).toContain('method_not_allowed');
  });

  it('a WebSocket Upgrade is a GET the proxy sees: allowed by a GET-only rule', async () => {
    const c = await openRaw(proxy.port);
    c.socket.write(`GET http://ro.test:${origin.port}/ws HTTP/1.1\r\nHost: ro.test:${origin.port}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    expect(await c.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 101 /);
    c.socket.write('ping');
    expect(await c.read('ping')).toBe('ping');
    c.socket.destroy();
  });

  it('report mode opens the tunnel and records the refusal it would have made', async () => {
    const c = await openRaw(report.port);
    c.socket.write(`CONNECT ro.test:${origin.port} HTTP/1.1\r\nHost: ro.test:${origin.port}\r\n\r\n`);
    expect(await c.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    c.socket.destroy();
    const rec = await report.sink.waitFor((r) => r.method === 'CONNECT' && r.host === 'ro.test');
    expect(rec).toMatchObject({ verdict: 'deny', mode: 'report', reason: 'method_not_allowed', rule: 'ro' });
  });
});
