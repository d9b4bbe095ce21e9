import { execFile } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { promisify } from 'node:util';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

const run = promisify(execFile);

let dns: TestDnsServer;
let tlsOrigin: Origin;
let httpOrigin: Origin;
let proxy: TestProxy;
let closedPort: number;

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.7'] },
    'meta.test': { A: ['169.254.169.254'] },
    'mapped.test': { AAAA: ['::ffff:10.1.2.3'] },
    'nat64.test': { AAAA: ['64:ff9b::a9fe:a9fe'] },
    'sixtofour.test': { AAAA: ['2002:a00:1::1'] },
    'mixed.test': { A: ['127.0.0.1'], AAAA: ['::ffff:169.254.169.254'] },
    'flip.test': { A: ['127.0.0.1'] },
    'closed.test': { A: ['127.0.0.1'] },
  });
  tlsOrigin = await startHttpsOrigin();
  httpOrigin = await startHttpOrigin();
  // A port that was just free: nothing listens there, so connects are refused.
  const tmp = await startHttpOrigin();
  closedPort = tmp.port;
  await tmp.close();
  const ports = `${tlsOrigin.port},${httpOrigin.port},${closedPort}`;
  proxy = await startTestProxy({
    flags: {
      allow: [`*.test:${ports}`, `127.0.0.1/32:${ports}`],
      deny: ['denied.test'],
      allowAddress: ['127.0.0.1/32'],
    },
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { headersTimeoutMs: 600 },
  });
});

afterAll(async () => {
  await proxy?.close();
  await tlsOrigin?.close();
  await httpOrigin?.close();
  await dns?.close();
});

const queriesFor = (name: string) => dns.queries.filter((q) => q.name.toLowerCase() === name);

describe('CONNECT through real clients', () => {
  it('https-proxy-agent reaches an allowed HTTPS origin and the decision is recorded with bytes', async () => {
    const agent = new HttpsProxyAgent(proxy.url);
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest(
        // Connection: close, so the origin ends the tunnel now (its record is written when the tunnel closes).
        { host: 'allowed.test', port: tlsOrigin.port, path: '/', agent, ca: testCert().cert, servername: 'allowed.test', headers: { connection: 'close' } },
        (res) => {
          let b = '';
          res.on('data', (c) => (b += c));
          res.on('end', () => resolve(b));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(body).toBe('hello');
    agent.destroy();
    const rec = await proxy.sink.waitFor((r) => r.method === 'CONNECT' && r.host === 'allowed.test' && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'rule_allow', address: '127.0.0.1', port: tlsOrigin.port, status: 200 });
    expect(rec.rule).toMatch(/allow/);
    expect(rec.bytesUp).toBeGreaterThan(0);
    expect(rec.timings.connectMs).not.toBeNull();
  });

  it("undici's ProxyAgent reaches an allowed origin", async () => {
    const dispatcher = new ProxyAgent({ uri: proxy.url, requestTls: { ca: testCert().cert, servername: 'allowed.test' } });
    const res = await undiciFetch(`https://allowed.test:${tlsOrigin.port}/`, { dispatcher });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('hello');
    await dispatcher.close();
  });

  it('curl through the proxy: allowed works, denied gets 403 naming the reason', async () => {
    const { writeFileSync, mkdtempSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const ca = join(mkdtempSync(join(tmpdir(), 'ae-ca-')), 'ca.pem');
    writeFileSync(ca, testCert().cert);
    const good = await run('curl', ['-sS', '--max-time', '5', '-x', proxy.url, '--cacert', ca, `https://allowed.test:${tlsOrigin.port}/`], { encoding: 'utf8' });
    expect(good.stdout).toBe('hello');
    const bad = await run('curl', ['-s', '--max-time', '5', '-x', proxy.url, '-w', '%{http_connect}', '-o', '/dev/null', `https://denied.test:${tlsOrigin.port}/`], { encoding: 'utf8' }).catch(
      (e: { stdout: string; code: number }) => e,
    );
    expect(bad.stdout).toBe('403');
  });
});

describe('CONNECT decisions', () => {
  it('deny wins over a matching allow, with reason, decision id header, and no DNS query for the name', async () => {
    const before = queriesFor('denied.test').length;
    const res = await rawExchange(proxy.port, `CONNECT denied.test:${tlsOrigin.port} HTTP/1.1\r\nHost: denied.test\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/X-Agent-Egress-Reason: rule_deny/);
    const id = /X-Agent-Egress-Decision: (\S+)/.exec(res)?.[1];
    expect(id).toBeTruthy();
    expect(res).toContain(`decision ${id}`);
    expect(queriesFor('denied.test').length).toBe(before);
    const rec = await proxy.sink.waitFor((r) => r.id === id);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'rule_deny', host: 'denied.test', status: 403 });
  });

  it('a name no rule matches is refused before any lookup (no_rule)', async () => {
    const res = await rawExchange(proxy.port, `CONNECT pastebin.com:443 HTTP/1.1\r\nHost: pastebin.com:443\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/no rule/);
    expect(queriesFor('pastebin.com')).toHaveLength(0);
  });

  it('answers JSON when the client asks for it', async () => {
    const res = await rawExchange(proxy.port, `CONNECT pastebin.com:443 HTTP/1.1\r\nHost: pastebin.com:443\r\nAccept: application/json\r\n\r\n`);
    const body = JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({ reason: 'no_rule', target: 'pastebin.com:443' });
    expect(body.decision).toMatch(/^[0-9a-z]+$/);
  });

  it('a port outside the rule is refused', async () => {
    const res = await rawExchange(proxy.port, `CONNECT allowed.test:22 HTTP/1.1\r\nHost: allowed.test:22\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
  });

  it.each([
    ['private.test', 'private'],
    ['meta.test', 'metadata'],
    ['mapped.test', 'private'],
    ['nat64.test', 'metadata'],
    ['sixtofour.test', 'private'],
  ])('%s resolving to a guarded address is refused (%s)', async (name, range) => {
    const res = await rawExchange(proxy.port, `CONNECT ${name}:${tlsOrigin.port} HTTP/1.1\r\nHost: ${name}:${tlsOrigin.port}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/X-Agent-Egress-Reason: private_address/);
    const rec = await proxy.sink.waitFor((r) => r.host === name && r.reason === 'private_address');
    expect(JSON.stringify(rec.detail)).toContain(range);
    expect(rec.address).toBeNull();
  });

  it('A + AAAA with one guarded address connects only to the good one and records the other', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`CONNECT mixed.test:${httpOrigin.port} HTTP/1.1\r\nHost: mixed.test:${httpOrigin.port}\r\n\r\n`);
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    s.socket.write(`GET / HTTP/1.1\r\nHost: mixed.test\r\nConnection: close\r\n\r\n`);
    expect(await s.read('hello')).toContain('hello');
    s.socket.destroy();
    const rec = await proxy.sink.waitFor((r) => r.host === 'mixed.test' && r.method === 'CONNECT');
    expect(rec.address).toBe('127.0.0.1');
    expect(JSON.stringify(rec.detail)).toContain('mapped:metadata');
  });

  it('re-resolves on every request: a name rebinding to a private address between two requests is refused', async () => {
    dns.set('flip.test', { A: ['127.0.0.1'] });
    const first = await rawExchange(proxy.port, `CONNECT flip.test:${httpOrigin.port} HTTP/1.1\r\nHost: flip.test:${httpOrigin.port}\r\n\r\n`, 500);
    expect(first).toMatch(/^HTTP\/1\.1 200 /);
    dns.set('flip.test', { A: ['10.9.9.9'] });
    const second = await rawExchange(proxy.port, `CONNECT flip.test:${httpOrigin.port} HTTP/1.1\r\nHost: flip.test:${httpOrigin.port}\r\n\r\n`);
    expect(second).toMatch(/^HTTP\/1\.1 403 /);
    expect(second).toMatch(/private_address/);
  });

  it.each([
    ['2130706433'],
    ['0x7f.1'],
    ['127.1'],
    ['0177.0.0.1'],
    ['0x7f000001'],
    ['[::ffff:127.0.0.1]'],
  ])('IP literal %s is canonicalised and matched by the CIDR rule only', async (spelling) => {
    const seen = proxy.sink.records.length;
    const s = await openRaw(proxy.port);
    s.socket.write(`CONNECT ${spelling}:${httpOrigin.port} HTTP/1.1\r\nHost: ${spelling}:${httpOrigin.port}\r\n\r\n`);
    const head = await s.read('\r\n\r\n');
    s.socket.destroy();
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    const rec = await proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= seen && r.method === 'CONNECT');
    expect(rec).toMatchObject({ verdict: 'allow', host: '127.0.0.1', address: '127.0.0.1', reason: 'rule_allow' });
  });

  it('an IP literal is never matched by host globs', async () => {
    // *.test allows names; 10.0.0.1 is not under any CIDR rule.
    const res = await rawExchange(proxy.port, `CONNECT 10.0.0.1:${httpOrigin.port} HTTP/1.1\r\nHost: 10.0.0.1:${httpOrigin.port}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/no_rule/);
  });

  it.each([
    ['no port', 'allowed.test'],
    ['port 0', 'allowed.test:0'],
    ['port 65536', 'allowed.test:65536'],
    ['exponent port', 'allowed.test:443e1'],
    ['hex port', 'allowed.test:0x1bb'],
    ['empty host', ':443'],
    ['userinfo', 'user:pw@allowed.test:443'],
    ['path', 'allowed.test:443/x'],
    ['bad characters', 'allo%77ed.test:443'],
  ])('malformed CONNECT target (%s) gets 400 and a record', async (_label, target) => {
    const res = await rawExchange(proxy.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(res).toMatch(/bad_request/);
    expect(res).not.toContain('pw@');
  });

  it('bytes pipelined after CONNECT are delivered upstream, not interpreted', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`CONNECT allowed.test:${httpOrigin.port} HTTP/1.1\r\nHost: allowed.test:${httpOrigin.port}\r\n\r\nGET /echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
    expect(await s.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 Connection established/);
    const rest = await s.read('"url":"/echo"');
    expect(rest).toContain('HTTP/1.1 200 OK');
    s.socket.destroy();
  });

  it('upstream refusing the connection gets 502', async () => {
    const res = await rawExchange(proxy.port, `CONNECT closed.test:${closedPort} HTTP/1.1\r\nHost: closed.test:${closedPort}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 502 /);
    const rec = await proxy.sink.waitFor((r) => r.host === 'closed.test');
    expect(rec.reason).toBe('upstream_error');
  });

  it('a name that does not resolve gets 502 dns_failure', async () => {
    const res = await rawExchange(proxy.port, `CONNECT nowhere.test:${httpOrigin.port} HTTP/1.1\r\nHost: nowhere.test:${httpOrigin.port}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 502 /);
    expect(res).toMatch(/dns_failure/);
  });
});

describe('request-head limits', () => {
  it('a slow request head (slowloris) is cut with 408', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write('CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nX-Slow: ');
    const res = await s.read(/HTTP\/1\.1 408/, 5_000);
    expect(res).toMatch(/408/);
    s.socket.destroy();
  });

  it('an oversize request head gets 431', async () => {
    const res = await rawExchange(proxy.port, `CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 431 /);
  });

  it('garbage gets 400 and the proxy keeps serving', async () => {
    const res = await rawExchange(proxy.port, '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    const ok = await rawExchange(proxy.port, `CONNECT allowed.test:${httpOrigin.port} HTTP/1.1\r\nHost: allowed.test:${httpOrigin.port}\r\n\r\n`, 300);
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('no input crashes the proxy', () => {
  it('hundreds of seeded random request heads and targets each get an answer or a close, and the proxy keeps serving', async () => {
    // A small deterministic PRNG, so a failure reproduces.
    let seed = 0x2545f491;
    const rnd = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pieces = ['CONNECT', 'GET', 'POST', 'OPTIONS', ' ', '\r\n', ':', '[', ']', '%', '@', '/', '?', '#', '0x', '\x00', '\xff', 'http://', 'https://',
      'allowed.test', '127.0.0.1', '::1', '99999', '443', 'Host: ', 'Content-Length: ', 'Transfer-Encoding: chunked', '-1', 'é', '*', '..', 'HTTP/1.1', 'HTTP/9'];
    for (let i = 0; i < 300; i++) {
      let req = '';
      const n = 1 + rnd(14);
      for (let j = 0; j < n; j++) req += pieces[rnd(pieces.length)];
      if (rnd(2)) req += '\r\n\r\n';
      const out = await rawExchange(proxy.port, req, 200);
      // Either nothing yet (an incomplete head waiting for more) or an HTTP answer; never a crash.
      expect(out === '' || /^HTTP\/1\.1 \d{3} /.test(out)).toBe(true);
    }
    const ok = await rawExchange(proxy.port, `CONNECT allowed.test:${httpOrigin.port} HTTP/1.1\r\nHost: allowed.test:${httpOrigin.port}\r\n\r\n`, 300);
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
  });
});
