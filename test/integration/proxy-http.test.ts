import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { HttpProxyAgent } from 'http-proxy-agent';
import { ProxyAgent, request as undiciRequest } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;

beforeAll(async () => {
  dns = await startTestDnsServer({ 'allowed.test': { A: ['127.0.0.1'] }, 'denied.test': { A: ['127.0.0.1'] } });
  origin = await startHttpOrigin();
  proxy = await startTestProxy({
    flags: { allow: [`allowed.test:${origin.port}`, `denied.test:${origin.port}`], deny: ['denied.test'], allowAddress: ['127.0.0.1/32'] },
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { requestIdleMs: 400, shutdownGraceMs: 1_000 },
  });
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await dns?.close();
});

function get(path: string, agent: HttpAgent, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`http://allowed.test:${origin.port}${path}`, { agent, headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('plain HTTP forwarding', () => {
  it('http-proxy-agent: allowed GET is forwarded with the URL authority as Host and no proxy headers', async () => {
    const agent = new HttpProxyAgent(proxy.url);
    const res = await get('/echo?token=abc', agent, { 'X-Keep': '1', 'Proxy-Connection': 'keep-alive', Connection: 'X-Drop', 'X-Drop': 'gone' });
    expect(res.status).toBe(200);
    const seen = JSON.parse(res.body);
    expect(seen.headers.host).toBe(`allowed.test:${origin.port}`);
    expect(seen.headers['x-keep']).toBe('1');
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['proxy-connection']).toBeUndefined();
    expect(seen.headers['x-drop']).toBeUndefined();
    expect(seen.url).toBe('/echo?token=abc');
    const rec = await proxy.sink.waitFor((r) => r.method === 'GET' && r.path === '/echo');
    // The query string is dropped from the record by default (it often carries secrets).
    expect(rec).toMatchObject({ verdict: 'allow', status: 200, host: 'allowed.test', address: '127.0.0.1' });
    expect(JSON.stringify(rec)).not.toContain('token=abc');
    agent.destroy();
  });

  it("undici's ProxyAgent: POST with a fixed-length body, streamed both ways", async () => {
    const dispatcher = new ProxyAgent({ uri: proxy.url, proxyTunnel: false });
    const body = Buffer.alloc(300_000, 1);
    const res = await undiciRequest(`http://allowed.test:${origin.port}/echo`, { dispatcher, method: 'POST', body });
    const seen = JSON.parse(await res.body.text());
    expect(res.statusCode).toBe(200);
    expect(seen.bodyBytes).toBe(300_000);
    expect(seen.method).toBe('POST');
    await dispatcher.close();
  });

  it('a chunked upload is forwarded whole', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`POST http://allowed.test:${origin.port}/echo HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`);
    s.socket.write('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    const out = await s.read('"bodyBytes":11');
    expect(out).toMatch(/^HTTP\/1\.1 200 /);
    s.socket.destroy();
  });

  it('every request on a kept-alive connection is checked: the second, to a denied host, gets 403', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://allowed.test:${origin.port}/ HTTP/1.1\r\nHost: allowed.test:${origin.port}\r\n\r\n`);
    expect(await s.read('hello')).toMatch(/^HTTP\/1\.1 200 /);
    const before = origin.seen.length;
    s.socket.write(`GET http://denied.test:${origin.port}/ HTTP/1.1\r\nHost: denied.test:${origin.port}\r\n\r\n`);
    const second = await s.read(/decision [0-9a-z]+\)\n/);
    expect(second).toMatch(/^HTTP\/1\.1 403 /);
    expect(second).toMatch(/rule_deny/);
    expect(origin.seen.length).toBe(before);
    s.socket.destroy();
  });

  it('a Host header that disagrees with the URL is replaced and the mismatch recorded', async () => {
    const res = await rawExchange(proxy.port, `GET http://allowed.test:${origin.port}/echo HTTP/1.1\r\nHost: metadata.internal\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    expect(res).toContain(`"host":"allowed.test:${origin.port}"`);
    const rec = await proxy.sink.waitFor((r) => r.detail?.hostHeaderMismatch === 'metadata.internal');
    expect(rec.verdict).toBe('allow');
  });

  it('redirects are passed back, never followed', async () => {
    const res = await rawExchange(proxy.port, `GET http://allowed.test:${origin.port}/redirect HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 302 /);
    expect(res).toMatch(/location: http:\/\/169\.254\.169\.254/i);
  });

  it('origin-form requests get 400 explaining how to use a proxy', async () => {
    const res = await rawExchange(proxy.port, 'GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(res).toMatch(/forward proxy/);
  });

  it.each([
    ['https scheme', 'https://allowed.test/'],
    ['userinfo', 'http://u:p@allowed.test/'],
    ['bad port', 'http://allowed.test:99999/'],
    ['empty host', 'http:///x'],
  ])('a malformed absolute-form target (%s) gets 400', async (_l, url) => {
    const res = await rawExchange(proxy.port, `GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(res).not.toContain('u:p');
  });

  it('an upstream that does not answer gets 504', async () => {
    const res = await rawExchange(proxy.port, `GET http://allowed.test:${origin.port}/slow HTTP/1.1\r\nHost: allowed.test\r\n\r\n`, 5_000);
    expect(res).toMatch(/^HTTP\/1\.1 504 /);
    const rec = await proxy.sink.waitFor((r) => r.path === '/slow');
    expect(rec).toMatchObject({ reason: 'upstream_timeout', status: 504, verdict: 'allow' });
  });

  it('upgrade (WebSocket-style) requests are checked, then tunnelled', async () => {
    const denied = await rawExchange(proxy.port, `GET http://denied.test:${origin.port}/ws HTTP/1.1\r\nHost: denied.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    expect(denied).toMatch(/^HTTP\/1\.1 403 /);
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://allowed.test:${origin.port}/ws HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 101 /);
    s.socket.write('ping-through');
    expect(await s.read('ping-through')).toContain('ping-through');
    s.socket.destroy();
  });

  it('a 200 MB response streams through with flat memory', async () => {
    const dispatcher = new ProxyAgent({ uri: proxy.url, proxyTunnel: false });
    const size = 200 * 1024 * 1024;
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const res = await undiciRequest(`http://allowed.test:${origin.port}/bytes/${size}`, { dispatcher });
    let got = 0;
    for await (const chunk of res.body) {
      got += (chunk as Buffer).length;
      if ((got & 0xffffff) < 65536) peak = Math.max(peak, process.memoryUsage().rss);
    }
    expect(got).toBe(size);
    // Origin, proxy and client share this process: a buffering proxy would add ~200 MB.
    expect(peak - rss0).toBeLessThan(80 * 1024 * 1024);
    const rec = await proxy.sink.waitFor((r) => r.path === `/bytes/${size}`);
    expect(rec.bytesDown).toBe(size);
    await dispatcher.close();
  });
});

describe('connection limits and address fallback', () => {
  let limited: TestProxy;
  beforeAll(async () => {
    dns.set('two.test', { A: ['127.0.0.2', '127.0.0.1'] });
    limited = await startTestProxy({
      flags: { allow: [`*.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.0/8'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { maxConnectionsPerClient: 2, shutdownGraceMs: 500 },
    });
  });
  afterAll(() => limited?.close());

  it('a connection over the per-client limit gets 503 with Retry-After and its request is never acted on', async () => {
    const a = await openRaw(limited.port);
    const b = await openRaw(limited.port);
    const before = origin.seen.length;
    const res = await rawExchange(limited.port, `GET http://allowed.test:${origin.port}/echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 503 /);
    expect(res).toMatch(/Retry-After: 1/);
    await new Promise((r) => setTimeout(r, 200));
    expect(origin.seen.length).toBe(before);
    expect(limited.sink.records.filter((r) => r.method === 'GET')).toHaveLength(0);
    expect(limited.sink.records.filter((r) => r.reason === 'limit_exceeded')).toHaveLength(1);
    a.socket.destroy();
    b.socket.destroy();
  });

  it('plain HTTP moves on to the next vetted address when the first refuses, and says which it used', async () => {
    await new Promise((r) => setTimeout(r, 100));
    const res = await rawExchange(limited.port, `GET http://two.test:${origin.port}/ HTTP/1.1\r\nHost: two.test\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    const id = /x-agent-egress-decision: (\S+)/i.exec(res)?.[1];
    const rec = await limited.sink.waitFor((r) => r.id === id);
    expect(rec.address).toBe('127.0.0.1');
  });

  it('an established tunnel carries its decision id', async () => {
    const res = await rawExchange(limited.port, `CONNECT two.test:${origin.port} HTTP/1.1\r\nHost: two.test:${origin.port}\r\n\r\n`, 300);
    expect(res).toMatch(/^HTTP\/1\.1 200 Connection established\r\nX-Agent-Egress-Decision: [0-9a-z]+\r\n\r\n/);
  });
});
