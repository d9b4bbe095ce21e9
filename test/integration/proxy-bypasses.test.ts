import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
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

/** The real proxy with a loopback-exempt policy of these rules, resolving through the test DNS server. */
function proxyWith(name: string, body: string): Promise<TestProxy> {
  const yaml = `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\n${body}`;
  return startTestProxy({ policyFile: policyFile(name, yaml), dnsServers: [`127.0.0.1:${dns.port}`] });
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

/** An origin whose answer to an upgrade request the test chooses, and which counts what it saw. */
async function scriptedOrigin(answer: ((req: IncomingMessage, socket: Socket) => void) | null): Promise<{ port: number; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.headers.host} ${req.url}`);
    req.resume();
    res.end('plain-answer');
  });
  // Without an 'upgrade' listener Node answers an upgrade request like any other: 200, keep-alive.
  if (answer) {
    server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      seen.push(`${req.method} ${req.headers.host} ${req.url}`);
      answer(req, socket);
    });
  }
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        // Upgraded sockets are no longer the server's to close.
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('Upgrade splices only after a real 101 that matches', () => {
  type Scripted = Awaited<ReturnType<typeof scriptedOrigin>>;
  let proxy: TestProxy;
  let plain: Scripted;
  const origins: Record<string, Scripted> = {};
  // How an origin may answer an upgrade request; only the first one is a switch the proxy may splice.
  // Write this answer, then echo whatever arrives (so a wrongly spliced connection would show it).
  const answerWith = (head: string) => (_req: IncomingMessage, s: Socket) => {
    s.write(head);
    s.on('data', (d) => s.write(d));
    s.on('error', () => s.destroy());
  };
  const answers: Record<string, (req: IncomingMessage, socket: Socket) => void> = {
    switch: answerWith('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'),
    wrongToken: answerWith('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'),
    noToken: answerWith('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n'),
    okWithUpgradeHeaders: answerWith('HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 12\r\n\r\nplain-answer'),
  };
  beforeAll(async () => {
    plain = await scriptedOrigin(null);
    for (const [k, fn] of Object.entries(answers)) origins[k] = await scriptedOrigin(fn);
    const ports = [...Object.values(origins).map((o) => o.port), plain.port];
    proxy = await proxyWith('upgrade.yaml', `rules:\n  - {name: origins, action: allow, hosts: [open.test, ro.test], ports: [${ports.join(', ')}]}\n`);
  });
  afterAll(async () => {
    await proxy?.close();
    for (const o of Object.values(origins)) await o.close();
    await plain?.close();
  });

  const upgradeTo = (port: number, path = '/ws') =>
    `GET http://open.test:${port}${path} HTTP/1.1\r\nHost: open.test:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

  it('a real 101 with the asked-for protocol is spliced and recorded as 101', async () => {
    const c = await openRaw(proxy.port);
    c.socket.write(upgradeTo(origins.switch.port));
    const head = await c.read('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head.toLowerCase()).toContain('upgrade: websocket');
    c.socket.write('frame-bytes');
    expect(await c.read('frame-bytes')).toBe('frame-bytes');
    c.socket.destroy();
    const rec = await proxy.sink.waitFor((r) => r.port === origins.switch.port && r.path === '/ws');
    expect(rec).toMatchObject({ verdict: 'allow', status: 101 });
  });

  const declined = [
    // how the origin answered, and whether the second request follows in the same packet
    ['plain 200 (no upgrade support), pipelined', 'plain', 'pipelined'],
    ['plain 200 (no upgrade support), keep-alive', 'plain', 'after'],
    ['200 carrying Upgrade headers, pipelined', 'okWithUpgradeHeaders', 'pipelined'],
    ['200 carrying Upgrade headers, keep-alive', 'okWithUpgradeHeaders', 'after'],
  ] as const;
  it.each(declined)('%s: relayed as a response; the next request on the connection is decided again', async (_label, which, when) => {
    const o = which === 'plain' ? plain : origins[which];
    const before = o.seen.length;
    const denied = `GET http://denied.test:${o.port}/secret-${which}-${when} HTTP/1.1\r\nHost: denied.test:${o.port}\r\n\r\n`;
    const c = await openRaw(proxy.port);
    c.socket.write(upgradeTo(o.port, `/up-${which}-${when}`) + (when === 'pipelined' ? denied : ''));
    const first = await c.read('plain-answer');
    expect(first).toMatch(/^HTTP\/1\.1 200 /);
    expect(first.toLowerCase()).not.toContain('upgrade: websocket');
    if (when === 'after') c.socket.write(denied);
    // The refusal body is one line: read the head, then that line, so nothing is left for the next read.
    const second = (await c.read('\r\n\r\n')) + (await c.read('\n'));
    expect(second).toMatch(/^HTTP\/1\.1 403 /);
    expect(second).toContain('no_rule');
    // And the connection still serves an allowed request after that, decided and forwarded on its own.
    c.socket.write(`GET http://open.test:${o.port}/third HTTP/1.1\r\nHost: open.test:${o.port}\r\n\r\n`);
    expect(await c.read('plain-answer')).toMatch(/^HTTP\/1\.1 200 /);
    c.socket.destroy();
    expect(o.seen.slice(before)).toEqual([`GET open.test:${o.port} /up-${which}-${when}`, `GET open.test:${o.port} /third`]);
    const up = await proxy.sink.waitFor((r) => r.path === `/up-${which}-${when}`);
    expect(up).toMatchObject({ verdict: 'allow', status: 200 });
    const refused = await proxy.sink.waitFor((r) => r.host === 'denied.test' && r.path === `/secret-${which}-${when}`);
    expect(refused).toMatchObject({ verdict: 'deny', reason: 'no_rule', status: 403 });
  });

  it.each([
    ['a 101 naming another protocol', 'wrongToken'],
    ['a 101 naming no protocol', 'noToken'],
  ] as const)('%s is never spliced: 502, and nothing the client sends after reaches the origin', async (_label, which) => {
    const o = origins[which];
    const before = o.seen.length;
    const res = await rawExchange(proxy.port, upgradeTo(o.port, `/bad-${which}`) + `GET http://denied.test:${o.port}/x HTTP/1.1\r\nHost: denied.test\r\n\r\n`, 2_000);
    expect(res).toMatch(/^HTTP\/1\.1 502 /);
    expect(res).not.toContain('GET http://denied.test');
    expect(o.seen.length - before).toBe(1);
    const rec = await proxy.sink.waitFor((r) => r.path === `/bad-${which}`);
    expect(rec).toMatchObject({ reason: 'upstream_error', status: 502 });
  });
});

describe('HTTP/1.1 conformance: rejected before any decision, recorded as bad_request', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await proxyWith('conformance.yaml', `rules:\n  - {name: open, action: allow, hosts: [open.test], ports: [${origin.port}]}\n`);
  });
  afterAll(() => proxy?.close());

  const auth = (u: string) => `Proxy-Authorization: Basic ${Buffer.from(`${u}:x`).toString('base64')}\r\n`;
  const rows = (p: number): [string, string, number][] => [
    // label, raw request, expected status
    ['CONNECT HTTP/1.1 without Host', `CONNECT open.test:${p} HTTP/1.1\r\n\r\n`, 400],
    ['CONNECT with two Host headers', `CONNECT open.test:${p} HTTP/1.1\r\nHost: open.test:${p}\r\nHost: denied.test:${p}\r\n\r\n`, 400],
    ['CONNECT with Host twice in other cases', `CONNECT open.test:${p} HTTP/1.1\r\nhost: open.test:${p}\r\nHOST: open.test:${p}\r\n\r\n`, 400],
    ['GET with two Host headers', `GET http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\nHost: denied.test\r\nConnection: close\r\n\r\n`, 400],
    ['GET HTTP/1.1 without Host', `GET http://open.test:${p}/ HTTP/1.1\r\nConnection: close\r\n\r\n`, 400],
    ['Upgrade with two Host headers', `GET http://open.test:${p}/ws HTTP/1.1\r\nHost: open.test:${p}\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`, 400],
    ['HTTP/2.0 request line', `GET http://open.test:${p}/ HTTP/2.0\r\nHost: open.test:${p}\r\nConnection: close\r\n\r\n`, 505],
    ['HTTP/2.0 CONNECT', `CONNECT open.test:${p} HTTP/2.0\r\nHost: open.test:${p}\r\n\r\n`, 505],
    ['HTTP/0.9 request line', `GET http://open.test:${p}/ HTTP/0.9\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['no version', `GET http://open.test:${p}/\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['HTTP/1.2', `GET http://open.test:${p}/ HTTP/1.2\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['two spaces after the method', `GET  http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\nConnection: close\r\n\r\n`, 400],
    ['two spaces before the version', `GET http://open.test:${p}/  HTTP/1.1\r\nHost: open.test:${p}\r\nConnection: close\r\n\r\n`, 400],
    ['CONNECT with two spaces', `CONNECT  open.test:${p} HTTP/1.1\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['a tab for a space', `GET\thttp://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['a lower-case method', `get http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['leading space', ` GET http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\n\r\n`, 400],
    ['two Proxy-Authorization headers on CONNECT', `CONNECT open.test:${p} HTTP/1.1\r\nHost: open.test:${p}\r\n${auth('a')}${auth('b')}\r\n`, 400],
    ['two Proxy-Authorization headers on GET', `GET http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\n${auth('a')}${auth('b')}Connection: close\r\n\r\n`, 400],
    // What stays accepted: HTTP/1.0 has no Host requirement (RFC 9112 §3.2 is about HTTP/1.1); empty
    // lines before the request line may be skipped (RFC 9112 §2.2).
    ['CONNECT HTTP/1.0 without Host', `CONNECT open.test:${p} HTTP/1.0\r\n\r\n`, 200],
    ['GET HTTP/1.0 without Host', `GET http://open.test:${p}/ HTTP/1.0\r\n\r\n`, 200],
    ['an empty line before the request line', `\r\nGET http://open.test:${p}/ HTTP/1.1\r\nHost: open.test:${p}\r\nConnection: close\r\n\r\n`, 200],
  ];

  it('has a row for every class', () => {
    expect(rows(1).length).toBe(22);
  });

  it.each(rows(0).map((r, i) => [r[0], i] as const))('%s', async (_label, i) => {
    const [label, raw, status] = rows(origin.port)[i];
    const before = origin.seen.length;
    const n = proxy.sink.records.length;
    const res = await rawExchange(proxy.port, raw, 1_000);
    expect(res.slice(0, 12), label).toBe(`HTTP/1.1 ${status}`);
    if (status === 200) return;
    expect(origin.seen.length).toBe(before);
    const rec = await proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= n);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'bad_request', status, rule: null });
    // Refused before identification and decision: no agent, no rule, no address.
    expect(rec.address ?? null).toBeNull();
  });

  it('a bad request line on a later request of a kept-alive connection is still refused (version, Host)', async () => {
    const c = await openRaw(proxy.port);
    c.socket.write(`GET http://open.test:${origin.port}/ HTTP/1.1\r\nHost: open.test:${origin.port}\r\n\r\n`);
    expect(await c.read('hello')).toMatch(/^HTTP\/1\.1 200 /);
    c.socket.write(`GET http://open.test:${origin.port}/ HTTP/1.1\r\nHost: open.test:${origin.port}\r\nHost: denied.test\r\n\r\n`);
    expect(await c.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    c.socket.destroy();
  });
});

describe('what the origin never receives: credentials and hop-by-hop headers', () => {
  let proxy: TestProxy;
  const token = 'agent-secret-token';
  beforeAll(async () => {
    const { createHash } = await import('node:crypto');
    proxy = await proxyWith(
      'strip.yaml',
      `agents:
  - name: bot
    token_sha256: "${createHash('sha256').update(token).digest('hex')}"
    rules:
      - {name: open, action: allow, hosts: [open.test], ports: [${origin.port}]}
`,
    );
  });
  afterAll(() => proxy?.close());

  const creds = `Proxy-Authorization: Basic ${Buffer.from(`bot:${token}`).toString('base64')}\r\n`;
  const hop = 'Proxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nX-Named-Hop: drop-me\r\nX-Kept: yes\r\n';
  // Header names the origin must not see; one row each so the list can grow.
  const never = ['proxy-authorization', 'proxy-connection', 'keep-alive', 'te', 'trailer', 'x-named-hop'];

  const names = (raw: string[]) => raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());

  it.each(never)('plain HTTP: %s is not forwarded', async (name) => {
    const before = origin.seen.length;
    const res = await rawExchange(proxy.port, `GET http://open.test:${origin.port}/echo?h=${name} HTTP/1.1\r\nHost: open.test:${origin.port}\r\n${creds}${hop}Connection: close, X-Named-Hop\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    const seen = origin.seen.slice(before);
    expect(seen.length).toBe(1);
    expect(names(seen[0].rawHeaders)).toContain('x-kept');
    expect(names(seen[0].rawHeaders)).not.toContain(name);
    expect(JSON.stringify(seen[0].rawHeaders)).not.toContain(token);
    expect(JSON.stringify(seen[0].rawHeaders)).not.toContain(Buffer.from(`bot:${token}`).toString('base64'));
  });

  it.each(never)('Upgrade: %s is not forwarded', async (name) => {
    const before = origin.seen.length;
    const c = await openRaw(proxy.port);
    c.socket.write(`GET http://open.test:${origin.port}/ws?h=${name} HTTP/1.1\r\nHost: open.test:${origin.port}\r\n${creds}${hop}Connection: Upgrade, X-Named-Hop\r\nUpgrade: echo\r\n\r\n`);
    expect(await c.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 101 /);
    c.socket.destroy();
    const seen = origin.seen.slice(before);
    expect(seen.length).toBe(1);
    expect(names(seen[0].rawHeaders)).toEqual(expect.arrayContaining(['x-kept', 'upgrade', 'connection']));
    expect(names(seen[0].rawHeaders)).not.toContain(name);
    expect(JSON.stringify(seen[0].rawHeaders)).not.toContain(Buffer.from(`bot:${token}`).toString('base64'));
  });
});

describe('hosts + cidrs: a name pinned to addresses, through the proxy', () => {
  let proxy: TestProxy;
  let outside: Origin;
  beforeAll(async () => {
    // A live origin on the address outside the pin: if the pin were skipped, the request would succeed.
    outside = await startHttpOrigin('127.0.0.2');
    dns.set('pin-in.test', { A: ['127.0.0.1'] });
    dns.set('pin-out.test', { A: ['127.0.0.2'] });
    dns.set('pin-mixed.test', { A: ['127.0.0.2', '127.0.0.1'] });
    proxy = await startTestProxy({
      policyFile: policyFile(
        'pin.yaml',
        `version: 1
address_guard: { exempt: [127.0.0.0/8] }
rules:
  - {name: pinned, action: allow, hosts: ["pin-*.test"], cidrs: [127.0.0.1/32], ports: [${origin.port}, ${outside.port}]}
`,
      ),
      dnsServers: [`127.0.0.1:${dns.port}`],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await outside?.close();
  });

  const rows = [
    // name, resolved to, expected status, reason, dialled address
    ['pin-in.test', 'inside', 200, 'rule_allow', '127.0.0.1'],
    ['pin-out.test', 'outside', 403, 'address_not_allowed', null],
    ['pin-mixed.test', 'both', 200, 'rule_allow', '127.0.0.1'],
  ] as const;

  it.each(rows)('CONNECT %s (%s) -> %s %s', async (name, _where, status, reason, address) => {
    const port = name === 'pin-out.test' ? outside.port : origin.port;
    const res = await rawExchange(proxy.port, `CONNECT ${name}:${port} HTTP/1.1\r\nHost: ${name}:${port}\r\n\r\n`, 500);
    expect(res.slice(0, 12)).toBe(`HTTP/1.1 ${status}`);
    const rec = await proxy.sink.waitFor((r) => r.method === 'CONNECT' && r.host === name);
    expect(rec).toMatchObject({ reason, address, rule: 'pinned' });
    if (name !== 'pin-in.test') expect(rec.detail?.refusedAddresses).toEqual([{ address: '127.0.0.2', why: 'rule_cidr' }]);
  });

  it.each(rows)('GET http://%s (%s) -> %s %s', async (name, _where, status, reason, address) => {
    const port = name === 'pin-out.test' ? outside.port : origin.port;
    const before = outside.seen.length;
    const res = await rawExchange(proxy.port, `GET http://${name}:${port}/ HTTP/1.1\r\nHost: ${name}:${port}\r\nConnection: close\r\n\r\n`);
    expect(res.slice(0, 12)).toBe(`HTTP/1.1 ${status}`);
    expect(outside.seen.length).toBe(before);
    const rec = await proxy.sink.waitFor((r) => r.method === 'GET' && r.host === name);
    expect(rec).toMatchObject({ reason, address, rule: 'pinned' });
    expect(rec.detail?.refusedAddresses ?? []).toEqual(name === 'pin-in.test' ? [] : [{ address: '127.0.0.2', why: 'rule_cidr' }]);
  });
});

describe('Upgrade declined on the TLS listener: the connection goes back to the parser too', () => {
  let proxy: TestProxy;
  let plain: Awaited<ReturnType<typeof scriptedOrigin>>;
  const certs = mkdtempSync(join(tmpdir(), 'ae-bypass-tls-'));
  beforeAll(async () => {
    const { initCerts } = await import('../../src/certs/init.js');
    await initCerts({ dir: certs, serverNames: ['127.0.0.1'], agents: [], days: 2, force: false });
    plain = await scriptedOrigin(null);
    proxy = await startTestProxy({
      policyFile: policyFile('tls-upgrade.yaml', `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - {name: loop, action: allow, cidrs: [127.0.0.1/32], ports: [${plain.port}]}\n`),
      tls: { certFile: join(certs, 'server.crt'), keyFile: join(certs, 'server.key') },
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await plain?.close();
  });

  it('a 200 to an upgrade is relayed; the next request on the TLS connection is decided (403)', async () => {
    const { connect: tlsConnect } = await import('node:tls');
    const { readFileSync } = await import('node:fs');
    const s = tlsConnect({ port: proxy.port, host: '127.0.0.1', ca: readFileSync(join(certs, 'ca.crt')), servername: '127.0.0.1' });
    let buf = '';
    s.on('data', (d) => (buf += d.toString('latin1')));
    await new Promise<void>((r, j) => s.once('secureConnect', () => r()).once('error', j));
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 300 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
    };
    s.write(`GET http://127.0.0.1:${plain.port}/up HTTP/1.1\r\nHost: 127.0.0.1:${plain.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
    await until(() => buf.includes('plain-answer'));
    expect(buf).toMatch(/^HTTP\/1\.1 200 /);
    buf = '';
    s.write(`GET http://127.0.0.2:${plain.port}/secret HTTP/1.1\r\nHost: 127.0.0.2:${plain.port}\r\n\r\n`);
    await until(() => /\r\n\r\n[^\n]*\n/.test(buf));
    expect(buf).toMatch(/^HTTP\/1\.1 403 /);
    s.destroy();
    expect(plain.seen).toEqual([`GET 127.0.0.1:${plain.port} /up`]);
  });
});
