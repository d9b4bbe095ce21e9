import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

/**
 * CONNECT on the plain listener is parsed by connect-head.ts, never by node:http: the answers and the
 * records are the ones node:http's path gave, and the HTTP server never sees such a connection.
 */
const run = promisify(execFile);

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let authProxy: TestProxy;
/** Connections the proxy's node:http server was handed. */
let handedToHttp = 0;
const TOKEN = 'connect-listener-secret';

beforeAll(async () => {
  dns = await startTestDnsServer({ 'allowed.test': { A: ['127.0.0.1'] }, 'denied.test': { A: ['127.0.0.1'] } });
  origin = await startHttpOrigin();
  proxy = await startTestProxy({
    flags: { allow: [`*.test:${origin.port}`], deny: ['denied.test'], allowAddress: ['127.0.0.1/32'] },
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { headersTimeoutMs: 800 },
  });
  proxy.egress.proxy.server.on('connection', () => handedToHttp++);
  const dir = mkdtempSync(join(tmpdir(), 'ae-connect-listener-'));
  const policy = join(dir, 'auth.yaml');
  writeFileSync(
    policy,
    `version: 1
require_auth: true
address_guard: { exempt: [127.0.0.1/32] }
agents:
  - name: bot
    token_sha256: "${createHash('sha256').update(TOKEN).digest('hex')}"
    rules:
      - {name: open, action: allow, hosts: [allowed.test], ports: [${origin.port}]}
`,
  );
  authProxy = await startTestProxy({ policyFile: policy, dnsServers: [`127.0.0.1:${dns.port}`] });
});

afterAll(async () => {
  await proxy?.close();
  await authProxy?.close();
  await origin?.close();
  await dns?.close();
});

const connectTo = (host: string, extra = '') => `CONNECT ${host}:${origin.port} HTTP/1.1\r\nHost: ${host}:${origin.port}\r\n${extra}\r\n`;
/** For heads refused before any decision: the port does not matter, nothing is dialled. */
const refusedHead = (extra: string) => `CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n${extra}\r\n`;
const basic = (u: string, p: string) => `Proxy-Authorization: Basic ${Buffer.from(`${u}:${p}`).toString('base64')}\r\n`;

describe('CONNECT without node:http', () => {
  it('curl -p reaches an allowed origin; the HTTP server never sees the connection; the record is the usual one', async () => {
    const before = handedToHttp;
    const n = proxy.sink.records.length;
    const out = await run('curl', ['-sS', '--max-time', '5', '-p', '-x', proxy.url, `http://allowed.test:${origin.port}/`], { encoding: 'utf8' });
    expect(out.stdout).toBe('hello');
    const rec = await proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= n && r.method === 'CONNECT');
    expect(rec).toMatchObject({ method: 'CONNECT', verdict: 'allow', reason: 'rule_allow', host: 'allowed.test', port: origin.port, status: 200, address: '127.0.0.1' });
    expect(handedToHttp).toBe(before);
    // A plain request still goes to the HTTP server (so the counter above counts something).
    const plain = await run('curl', ['-sS', '--max-time', '5', '-x', proxy.url, `http://allowed.test:${origin.port}/`], { encoding: 'utf8' });
    expect(plain.stdout).toBe('hello');
    expect(handedToHttp).toBe(before + 1);
  });

  it('a denied CONNECT gets 403 and a CONNECT record naming the rule', async () => {
    const res = await rawExchange(proxy.port, connectTo('denied.test'));
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    const id = /X-Agent-Egress-Decision: (\S+)/.exec(res)?.[1];
    const rec = await proxy.sink.waitFor((r) => r.id === id);
    expect(rec).toMatchObject({ method: 'CONNECT', verdict: 'deny', reason: 'rule_deny', host: 'denied.test', status: 403 });
  });

  it('407 without credentials, 200 with them (Proxy-Authorization read from the parsed head)', async () => {
    const res = await rawExchange(authProxy.port, connectTo('allowed.test'));
    expect(res).toMatch(/^HTTP\/1\.1 407 /);
    expect(res).toMatch(/Proxy-Authenticate: Basic/);
    const id = /X-Agent-Egress-Decision: (\S+)/.exec(res)?.[1];
    expect(await authProxy.sink.waitFor((r) => r.id === id)).toMatchObject({ method: 'CONNECT', reason: 'auth_required', status: 407 });
    const wrong = await rawExchange(authProxy.port, connectTo('allowed.test', basic('bot', 'nope')));
    expect(wrong).toMatch(/^HTTP\/1\.1 407 /);
    const s = await openRaw(authProxy.port);
    s.socket.write(connectTo('allowed.test', basic('bot', TOKEN)));
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    s.socket.destroy();
    const ok = await authProxy.sink.waitFor((r) => r.method === 'CONNECT' && r.status === 200);
    expect(ok).toMatchObject({ agent: 'bot', reason: 'rule_allow' });
  });

  it('two Proxy-Authorization headers are refused (400) before identification', async () => {
    const res = await rawExchange(authProxy.port, connectTo('allowed.test', basic('bot', TOKEN) + basic('bot', 'other')));
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(res).toContain('more than one Proxy-Authorization header');
  });

  it('the Accept header of the parsed head picks a JSON answer', async () => {
    const res = await rawExchange(proxy.port, connectTo('denied.test', 'Accept: application/json\r\n'));
    expect(JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4))).toMatchObject({ reason: 'rule_deny' });
  });

  it.each([
    // label, head, status, detail.error: llhttp's code where node:http refused the same head before
    ['obs-fold', refusedHead('X-A: a\r\n b\r\n'), 400, 'HPE_INVALID_HEADER_TOKEN'],
    ['a bare LF after a field', `CONNECT allowed.test:1 HTTP/1.1\r\nHost: a\n\r\n`, 400, 'HPE_CR_EXPECTED'],
    ['a bare LF after the request line', `CONNECT allowed.test:1 HTTP/1.1\nHost: a\r\n\r\n`, 400, 'HPE_INVALID_VERSION'],
    ['NUL in a value', refusedHead('X-A: a\x00b\r\n'), 400, 'HPE_INVALID_HEADER_TOKEN'],
    ['a space before the colon', refusedHead('X-A : b\r\n'), 400, 'HPE_INVALID_HEADER_TOKEN'],
    ['two Content-Lengths', refusedHead('Content-Length: 0\r\nContent-Length: 0\r\n'), 400, 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['a bad Content-Length', refusedHead('Content-Length: 1x\r\n'), 400, 'HPE_INVALID_CONTENT_LENGTH'],
    ['HTTP/1.2', `CONNECT allowed.test:1 HTTP/1.2\r\nHost: a\r\n\r\n`, 400, 'HPE_INVALID_VERSION'],
    ['a high byte in the target', `CONNECT allowed\xff.test:1 HTTP/1.1\r\nHost: a\r\n\r\n`, 400, 'HPE_INVALID_URL'],
    ['two spaces', `CONNECT  allowed.test:1 HTTP/1.1\r\nHost: a\r\n\r\n`, 400, 'request_line'],
    ['Transfer-Encoding', refusedHead('Transfer-Encoding: chunked\r\n'), 400, 'connect_content'],
    ['content', refusedHead('Content-Length: 4\r\n') + 'abcd', 400, 'connect_content'],
    ['an oversize head', refusedHead(`X-Big: ${'a'.repeat(40_000)}\r\n`), 431, 'HPE_HEADER_OVERFLOW'],
    ['too many fields', refusedHead('X: y\r\n'.repeat(2001)), 431, 'too_many_fields'],
  ])('%s: refused, recorded as an unparsed bad_request, nothing dialled', async (_label, head, status, error) => {
    const seen = origin.seen.length;
    const res = await rawExchange(proxy.port, Buffer.from(head, 'latin1'));
    expect(res.slice(0, 12)).toBe(`HTTP/1.1 ${status}`);
    const id = /X-Agent-Egress-Decision: (\S+)/.exec(res)?.[1];
    const rec = await proxy.sink.waitFor((r) => r.id === id);
    expect(rec).toMatchObject({ method: 'UNPARSED', verdict: 'deny', reason: 'bad_request', status, detail: { error } });
    expect(origin.seen.length).toBe(seen);
  });

  it('a head that does not arrive in time gets 408 and its record', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write('CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nX-Slow: ');
    const res = await s.read(/\r\n\r\n/, 5_000);
    s.socket.destroy();
    expect(res).toMatch(/^HTTP\/1\.1 408 /);
    const id = /X-Agent-Egress-Decision: (\S+)/.exec(res)?.[1];
    expect(await proxy.sink.waitFor((r) => r.id === id)).toMatchObject({ method: 'UNPARSED', reason: 'bad_request', status: 408, detail: { error: 'ERR_HTTP_REQUEST_TIMEOUT' } });
  });

  it('a head sent in small pieces is taken, and bytes pipelined after it reach the origin', async () => {
    const s = await openRaw(proxy.port);
    const head = connectTo('allowed.test', 'User-Agent: pieces\r\n');
    for (let i = 0; i < head.length; i += 7) {
      s.socket.write(head.slice(i, i + 7));
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 Connection established/);
    s.socket.write(`GET /echo/after HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
    expect(await s.read('"url":"/echo/after"')).toContain('HTTP/1.1 200 OK');
    s.socket.destroy();
  });

  it('bytes pipelined in the same write as the head are the tunnel’s first bytes', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(connectTo('allowed.test') + `GET /echo/pipelined HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 Connection established/);
    expect(await s.read('"url":"/echo/pipelined"')).toContain('HTTP/1.1 200 OK');
    s.socket.destroy();
  });

  it('a CONNECT after a plain request on the same connection still goes through the HTTP server', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://allowed.test:${origin.port}/ HTTP/1.1\r\nHost: allowed.test:${origin.port}\r\n\r\n`);
    expect(await s.read('hello')).toMatch(/^HTTP\/1\.1 200 /);
    s.socket.write(connectTo('allowed.test'));
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 Connection established/);
    s.socket.destroy();
  });
});

describe('admission with the shared close handler', () => {
  it('a closed connection frees its place under the per-client limit', { timeout: 30_000 }, async () => {
    const limited = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { maxConnectionsPerClient: 1 },
    });
    try {
      for (let round = 0; round < 2; round++) {
        const held = await openRaw(limited.port);
        held.socket.write(connectTo('allowed.test'));
        expect(await held.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
        expect(await rawExchange(limited.port, connectTo('allowed.test'))).toMatch(/^HTTP\/1\.1 503 /);
        held.socket.destroy();
        // Both the held socket and the refused one must be released before the next round's connection
        // (the refused one once its 5 s linger for an unread answer is over, respond.ts refuseSocket).
        const deadline = Date.now() + 8_000;
        while (limited.egress.proxy.stats().activeConnections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(limited.egress.proxy.stats().activeConnections).toBe(0);
      }
    } finally {
      await limited.close();
    }
  });
});
