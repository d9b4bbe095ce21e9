import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { connectVia, greeting, RawSocks, requestDomain, requestIpv4, requestIpv6, startBlackhole, userPass } from './socks-helpers.js';

let dns: TestDnsServer;
let origin: Origin;
let origin6: Origin;
let proxy: TestProxy;
let socksPort: number;
let closedPort: number;
let blackhole: { port: number; close(): void };

const GET = (host: string) => `GET /echo HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.7'] },
    'meta.test': { A: ['169.254.169.254'] },
    'v6.test': { AAAA: ['::1'] },
    'hole.test': { A: ['127.0.0.1'] },
  });
  origin = await startHttpOrigin();
  origin6 = await startHttpOrigin('::1');
  const tmp = await startHttpOrigin();
  closedPort = tmp.port;
  await tmp.close();
  blackhole = await startBlackhole();
  const ports = `${origin.port},${origin6.port},${closedPort},${blackhole.port}`;
  proxy = await startTestProxy({
    flags: {
      allow: [`*.test:${ports}`, `127.0.0.1/32:${ports}`, `[::1]/128:${ports}`, '10.0.0.0/8:80', '169.254.0.0/16:80'],
      deny: ['denied.test'],
      allowAddress: ['127.0.0.1/32', '::1/128'],
    },
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { headersTimeoutMs: 800, connectTimeoutMs: 700 },
    socks: { listen: '127.0.0.1:0' },
  });
  socksPort = proxy.egress.socks!.address.port;
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await origin6?.close();
  blackhole?.close();
  await dns?.close();
});

const socksRecords = () => proxy.sink.records.filter((r) => r.method === 'SOCKS5');

async function expectReply(request: Buffer, code: number): Promise<void> {
  const { c, code: got } = await connectVia(socksPort, request);
  expect(got).toBe(code);
  // A refusal ends the connection: the proxy closes it, nothing is relayed.
  expect((await c.untilClosed()).length).toBe(0);
}

describe('SOCKS5 CONNECT', () => {
  it('a domain target is resolved by the proxy, connected, spliced and recorded like CONNECT', async () => {
    const before = dns.queries.length;
    const { c, code, reply } = await connectVia(socksPort, requestDomain('Allowed.TEST.', origin.port));
    expect(code).toBe(0);
    // The bound address is the upstream socket's local end: 127.0.0.1 and a real port.
    expect([...reply.subarray(3, 8)]).toEqual([1, 127, 0, 0, 1]);
    expect(reply.readUInt16BE(8)).toBeGreaterThan(0);
    c.write(GET('allowed.test'));
    const body = (await c.untilClosed()).toString();
    expect(body).toMatch(/^HTTP\/1\.1 200/);
    expect(dns.queries.slice(before).some((q) => q.name.toLowerCase() === 'allowed.test')).toBe(true);
    const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'allowed.test' && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'rule_allow', port: origin.port, address: '127.0.0.1', status: 200, agent: null });
    expect(rec.rule).toBe(`flag:allow:*.test:${origin.port},${origin6.port},${closedPort},${blackhole.port}`);
    expect(rec.bytesUp).toBe(Buffer.byteLength(GET('allowed.test')));
    expect(rec.timings.dnsMs).not.toBeNull();
  });

  it('an IPv4 target (ATYP 1) is its own address: no lookup', async () => {
    const before = dns.queries.length;
    const { c, code } = await connectVia(socksPort, requestIpv4('127.0.0.1', origin.port));
    expect(code).toBe(0);
    c.write(GET('127.0.0.1'));
    expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(dns.queries.length).toBe(before);
    const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === '127.0.0.1' && r.port === origin.port && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', address: '127.0.0.1', status: 200 });
  });

  it('an IPv6 target (ATYP 4) reaches an origin on ::1, and the reply carries an IPv6 bound address', async () => {
    const { c, code, reply } = await connectVia(socksPort, requestIpv6([0, 0, 0, 0, 0, 0, 0, 1], origin6.port));
    expect(code).toBe(0);
    expect(reply[3]).toBe(4);
    expect(reply.length).toBe(22);
    c.write(GET('[::1]'));
    expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
    const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === '::1' && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', address: '::1', port: origin6.port });
  });

  it('a name with only an AAAA answer is dialled over IPv6', async () => {
    const { c, code } = await connectVia(socksPort, requestDomain('v6.test', origin6.port));
    expect(code).toBe(0);
    c.write(GET('v6.test'));
    expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'v6.test' && r.bytesDown > 0)).toMatchObject({ address: '::1' });
  });

  it('an IPv4-mapped IPv6 target is judged as the IPv4 address it is', async () => {
    const seen = new Set(proxy.sink.records.map((r) => r.id));
    const { c, code } = await connectVia(socksPort, requestIpv6([0, 0, 0, 0, 0, 0xffff, 0x7f00, 0x0001], origin.port));
    expect(code).toBe(0);
    c.destroy();
    const rec = await proxy.sink.waitFor((r) => !seen.has(r.id) && r.method === 'SOCKS5');
    expect(rec).toMatchObject({ verdict: 'allow', host: '127.0.0.1', port: origin.port, address: '127.0.0.1' });
  });

  it('greeting, request and the first payload in one segment: the payload goes upstream untouched', async () => {
    const c = await RawSocks.open(socksPort);
    c.write(Buffer.concat([greeting(0), requestDomain('allowed.test', origin.port), Buffer.from(GET('allowed.test'))]));
    const head = await c.read(2 + 10);
    expect([...head.subarray(0, 4)]).toEqual([5, 0, 5, 0]);
    const body = (await c.untilClosed()).toString();
    expect(body).toMatch(/^HTTP\/1\.1 200/);
    expect(JSON.parse(body.slice(body.indexOf('\r\n\r\n') + 4)).url).toBe('/echo');
  });

  it('a greeting and request sent byte by byte (segmented) still connect', async () => {
    const c = await RawSocks.open(socksPort);
    const bytes = Buffer.concat([greeting(1, 0), requestDomain('allowed.test', origin.port)]);
    for (const b of bytes) {
      c.write([b]);
      await new Promise((r) => setTimeout(r, 3));
    }
    const head = await c.read(2 + 10);
    expect([...head.subarray(0, 4)]).toEqual([5, 0, 5, 0]);
    c.write(GET('allowed.test'));
    expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
  });
});

describe('SOCKS5 reply codes', () => {
  it('denied by a rule: 0x02, closed, recorded, and the name is never resolved', async () => {
    const before = dns.queries.length;
    await expectReply(requestDomain('denied.test', origin.port), 0x02);
    expect(dns.queries.slice(before).some((q) => q.name.toLowerCase() === 'denied.test')).toBe(false);
    const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'denied.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'flag:deny:denied.test', status: 403, bytesUp: 0 });
    expect(rec.detail?.socksReply).toBe(2);
  });

  it('no rule for the name or the port: 0x02 no_rule', async () => {
    await expectReply(requestDomain('elsewhere.example', 443), 0x02);
    expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'elsewhere.example')).toMatchObject({ reason: 'no_rule', verdict: 'deny' });
    await expectReply(requestDomain('allowed.test', 9), 0x02);
    expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'allowed.test' && r.port === 9)).toMatchObject({ reason: 'no_rule' });
  });

  it('private and metadata addresses are refused by the guard (0x02 private_address), by name and literal alike', async () => {
    await expectReply(requestDomain('private.test', origin.port), 0x02);
    await expectReply(requestDomain('meta.test', origin.port), 0x02);
    await expectReply(requestIpv4('169.254.169.254', 80), 0x02);
    await expectReply(requestDomain('0xa9fea9fe', 80), 0x02);
    for (const host of ['private.test', 'meta.test', '169.254.169.254']) {
      const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === host);
      expect(rec).toMatchObject({ reason: 'private_address', verdict: 'deny', status: 403 });
      expect((rec.detail?.refusedAddresses as unknown[]).length).toBe(1);
    }
  });

  it("the proxy's own listeners are refused, even with 127.0.0.1 exempted", async () => {
    await expectReply(requestIpv4('127.0.0.1', socksPort), 0x02);
    await expectReply(requestIpv4('127.0.0.1', proxy.port), 0x02);
  });

  it('a name that does not resolve: 0x04 host unreachable (dns_failure)', async () => {
    await expectReply(requestDomain('nowhere.test', origin.port), 0x04);
    expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'nowhere.test')).toMatchObject({ reason: 'dns_failure', verdict: 'deny', status: 502 });
  });

  it('the upstream refuses the connection: 0x05 (upstream_error)', async () => {
    await expectReply(requestDomain('allowed.test', closedPort), 0x05);
    const rec = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.port === closedPort);
    expect(rec).toMatchObject({ reason: 'upstream_error', verdict: 'allow', status: 502, address: '127.0.0.1' });
    expect(rec.detail?.socksReply).toBe(5);
  });

  it('the upstream never answers: 0x06 (upstream_timeout) after --connect-timeout', async () => {
    await expectReply(requestDomain('hole.test', blackhole.port), 0x06);
    expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'hole.test')).toMatchObject({ reason: 'upstream_timeout', status: 504 });
  });

  it('BIND, UDP ASSOCIATE and unknown commands: 0x07', async () => {
    for (const cmd of [2, 3, 9]) await expectReply(requestDomain('allowed.test', origin.port, cmd), 0x07);
    const recs = socksRecords().filter((r) => r.detail?.socksReply === 7);
    expect(recs.map((r) => r.detail?.error)).toEqual(expect.arrayContaining([expect.stringMatching(/^BIND/), expect.stringMatching(/^UDP ASSOCIATE/), expect.stringMatching(/^command 9/)]));
    expect(recs.every((r) => r.reason === 'bad_request' && r.verdict === 'deny')).toBe(true);
  });

  it('an unknown address type: 0x08', async () => {
    const { c, code } = await connectVia(socksPort, Buffer.from([5, 1, 0, 5, 1, 2, 3, 4, 0, 80]));
    expect(code).toBe(0x08);
    await c.untilClosed();
    expect(socksRecords().some((r) => r.detail?.atyp === 5 && r.reason === 'bad_request')).toBe(true);
  });

  it('a malformed target (bad name, port 0, bytes that are not UTF-8): 0x01 bad_request', async () => {
    await expectReply(requestDomain('evil.test/x', 80), 0x01);
    await expectReply(requestDomain('a b.test', 80), 0x01);
    await expectReply(requestDomain('allowed.test', 0), 0x01);
    await expectReply(Buffer.concat([Buffer.from([5, 1, 0, 3, 3, 0xff, 0xfe, 0x41]), Buffer.from([0, 80])]), 0x01);
    await expectReply(Buffer.from([5, 1, 0, 1, 0, 0, 0, 0, 0, 0]), 0x01);
    const bad = socksRecords().filter((r) => r.detail?.socksReply === 1 && r.reason === 'bad_request');
    expect(bad.length).toBeGreaterThanOrEqual(5);
  });

  it('no acceptable method (GSSAPI only): 0xFF and closed', async () => {
    const c = await RawSocks.open(socksPort);
    c.write(greeting(1));
    expect([...(await c.read(2))]).toEqual([5, 0xff]);
    expect((await c.untilClosed()).length).toBe(0);
    expect(socksRecords().some((r) => r.reason === 'bad_request' && String(r.detail?.error).includes('no supported authentication method'))).toBe(true);
  });
});

describe('not SOCKS5, and limits', () => {
  it('SOCKS4 and SOCKS4a are refused (SOCKS4 reject) and closed, recorded as bad_request', async () => {
    for (const req of [
      Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0x41, 0]),
      Buffer.from([4, 1, 0, 80, 0, 0, 0, 1, 0, ...Buffer.from('allowed.test'), 0]),
    ]) {
      const c = await RawSocks.open(socksPort);
      c.write(req);
      const rest = await c.untilClosed();
      expect([...rest.subarray(0, 2)]).toEqual([0, 0x5b]);
    }
    expect(socksRecords().filter((r) => String(r.detail?.error).startsWith('SOCKS4')).length).toBe(2);
  });

  it('garbage (an HTTP request, a TLS ClientHello) is closed without an answer, and the listener keeps serving', async () => {
    for (const junk of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])]) {
      const c = await RawSocks.open(socksPort);
      c.write(junk);
      expect((await c.untilClosed()).length).toBe(0);
    }
    expect(socksRecords().filter((r) => r.detail?.error === 'not a SOCKS5 greeting').length).toBe(2);
    const { code } = await connectVia(socksPort, requestDomain('allowed.test', origin.port));
    expect(code).toBe(0);
  });

  it('a handshake not completed within the header timeout is closed and recorded (408)', async () => {
    const c = await RawSocks.open(socksPort);
    c.write([5, 1]);
    await c.untilClosed(3_000);
    expect(socksRecords().some((r) => r.status === 408 && r.reason === 'bad_request' && String(r.detail?.error).includes('not completed'))).toBe(true);
  });

  it('a wrong sub-negotiation version after choosing username/password is closed', async () => {
    const c = await RawSocks.open(socksPort);
    c.write(greeting(2));
    expect([...(await c.read(2))]).toEqual([5, 2]);
    c.write([5, 1, 65, 1, 65]);
    await c.untilClosed();
  });
});

describe('connection limits, idle tunnels and shutdown', () => {
  it('per-client limit: the connection over it is closed before a byte is read, and recorded', async () => {
    const p = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { maxConnectionsPerClient: 2, tunnelIdleMs: 300 },
      socks: { listen: '127.0.0.1:0' },
    });
    try {
      const port = p.egress.socks!.address.port;
      const a = await RawSocks.open(port);
      const b = await RawSocks.open(port);
      const c = await RawSocks.open(port);
      await c.untilClosed();
      expect(a.closed || b.closed).toBe(false);
      const rec = await p.sink.waitFor((r) => r.method === 'SOCKS5' && r.reason === 'limit_exceeded');
      expect(rec).toMatchObject({ status: 503, detail: { limit: 'per_client' } });
      a.destroy();
      b.destroy();
      await new Promise((r) => setTimeout(r, 50));

      // An idle tunnel is closed after --tunnel-idle-timeout and its record written.
      const t = await connectVia(port, requestDomain('allowed.test', origin.port));
      expect(t.code).toBe(0);
      await t.c.untilClosed(3_000);
      expect(await p.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'allowed.test' && r.status === 200)).toMatchObject({ verdict: 'allow', bytesUp: 0 });
    } finally {
      await p.close();
    }
  });

  it('shutdown: an open tunnel is ended after the grace period and still recorded; the listener stops accepting', async () => {
    const p = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { shutdownGraceMs: 200 },
      socks: { listen: '127.0.0.1:0' },
    });
    const port = p.egress.socks!.address.port;
    const t = await connectVia(port, requestDomain('allowed.test', origin.port));
    expect(t.code).toBe(0);
    t.c.write('GET /slow HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    // The gauges count SOCKS5 connections and tunnels with the HTTP listener's.
    await new Promise((r) => setTimeout(r, 50));
    expect(await p.egress.metrics.getSingleMetricAsString('agent_egress_active_tunnels')).toMatch(/^agent_egress_active_tunnels 1$/m);
    // A client that finished its greeting before shutdown and sends its request during it is refused.
    const late = await RawSocks.open(port);
    late.write(greeting(0));
    expect([...(await late.read(2))]).toEqual([5, 0]);
    const closing = p.close();
    await new Promise((r) => setTimeout(r, 50));
    late.write(requestDomain('allowed.test', origin.port));
    expect((await late.read(10))[1]).toBe(0x01);
    await closing;
    await t.c.untilClosed();
    expect(p.sink.records.find((r) => r.method === 'SOCKS5' && r.reason === 'shutting_down')).toMatchObject({ host: 'allowed.test', status: 503 });
    const rec = p.sink.records.find((r) => r.method === 'SOCKS5' && r.host === 'allowed.test' && r.reason === 'rule_allow');
    expect(rec).toMatchObject({ verdict: 'allow', status: 200 });
    expect(rec!.bytesUp).toBeGreaterThan(0);
    await expect(RawSocks.open(port)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('a SOCKS5 listener reachable from outside', () => {
  it('without require_auth logs a loud warning naming it; on loopback it does not', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
    for (const listen of ['0.0.0.0:0', '127.0.0.1:0']) {
      const p = await startTestProxy({ flags: { allow: ['x.test'], deny: [], allowAddress: [] }, logger, socks: { listen } });
      await p.close();
    }
    const warned = lines.map((l) => JSON.parse(l)).filter((l) => String(l.msg).startsWith('SOCKS5 LISTENING ON A NON-LOOPBACK ADDRESS'));
    expect(warned).toHaveLength(1);
    expect(warned[0].socks).toMatch(/^0\.0\.0\.0:\d+$/);
  });
});

describe('authentication maps to the same agents as Proxy-Authorization', () => {
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  let p: TestProxy;
  let port: number;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-socks-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(
      file,
      `version: 1
require_auth: true
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: shared
    action: allow
    hosts: [allowed.test]
    ports: [${origin.port}]
agents:
  - name: coder
    token_sha256: "${sha('s3cret')}"
    rules:
      - name: coder-only
        action: allow
        hosts: [private.test, denied.test]
        ports: [${origin.port}]
`,
    );
    p = await startTestProxy({ policyFile: file, flags: { allow: [], deny: [], allowAddress: [] }, dnsServers: [`127.0.0.1:${dns.port}`], socks: { listen: '127.0.0.1:0' } });
    port = p.egress.socks!.address.port;
  });
  afterAll(async () => {
    await p?.close();
  });

  it('where credentials are required, a client offering only no-auth gets 0xFF (auth_required)', async () => {
    const c = await RawSocks.open(port);
    c.write(greeting(0));
    expect([...(await c.read(2))]).toEqual([5, 0xff]);
    await c.untilClosed();
    expect(await p.sink.waitFor((r) => r.method === 'SOCKS5' && r.reason === 'auth_required')).toMatchObject({ status: 407, agent: null, host: '' });
  });

  it('username/password picks the agent: the record names it and its own rules apply', async () => {
    const c = await RawSocks.open(port);
    c.write(greeting(0, 2));
    expect([...(await c.read(2))]).toEqual([5, 2]);
    c.write(userPass('coder', 's3cret'));
    expect([...(await c.read(2))]).toEqual([1, 0]);
    c.write(requestDomain('denied.test', origin.port));
    const r = await c.read(10);
    expect(r[1]).toBe(0);
    c.write(GET('denied.test'));
    expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
    const rec = await p.sink.waitFor((x) => x.method === 'SOCKS5' && x.host === 'denied.test' && x.bytesDown > 0);
    expect(rec).toMatchObject({ agent: 'coder', rule: 'coder-only', verdict: 'allow' });
  });

  it('greeting, credentials and request in one segment work too', async () => {
    const c = await RawSocks.open(port);
    c.write(Buffer.concat([greeting(2), userPass('coder', 's3cret'), requestDomain('allowed.test', origin.port)]));
    const r = await c.read(2 + 2 + 10);
    expect([...r.subarray(0, 4)]).toEqual([5, 2, 1, 0]);
    expect(r[5]).toBe(0);
    c.destroy();
  });

  it('a wrong password or an unknown user: RFC 1929 failure, closed, auth_required, no secret recorded', async () => {
    for (const [u, pw] of [
      ['coder', 'wrong-pass-1'],
      ['nobody', 's3cret'],
      ['', ''],
    ]) {
      const c = await RawSocks.open(port);
      c.write(greeting(2));
      expect([...(await c.read(2))]).toEqual([5, 2]);
      c.write(userPass(u, pw));
      expect([...(await c.read(2))]).toEqual([1, 1]);
      expect((await c.untilClosed()).length).toBe(0);
    }
    const recs = p.sink.records.filter((r) => r.method === 'SOCKS5' && r.reason === 'auth_required' && r.detail?.error === 'invalid proxy credentials');
    expect(recs.length).toBe(3);
    expect(JSON.stringify(p.sink.records)).not.toContain('wrong-pass-1');
    expect(JSON.stringify(p.sink.records)).not.toContain('s3cret');
  });

  it('an authenticated agent is still refused what its rules do not allow (0x02), and the guard still applies', async () => {
    const c = await RawSocks.open(port);
    c.write(Buffer.concat([greeting(2), userPass('coder', 's3cret'), requestDomain('other.example', origin.port)]));
    const r = await c.read(2 + 2 + 10);
    expect(r[5]).toBe(2);
    await c.untilClosed();
    const c2 = await RawSocks.open(port);
    c2.write(Buffer.concat([greeting(2), userPass('coder', 's3cret'), requestDomain('private.test', origin.port)]));
    expect((await c2.read(14))[5]).toBe(2);
    expect(await p.sink.waitFor((x) => x.method === 'SOCKS5' && x.host === 'private.test')).toMatchObject({ agent: 'coder', reason: 'private_address' });
    expect(await p.sink.waitFor((x) => x.method === 'SOCKS5' && x.host === 'other.example')).toMatchObject({ agent: 'coder', reason: 'no_rule' });
  });
});
