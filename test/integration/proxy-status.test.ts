import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASONS } from '../../src/policy/vocabulary.js';
import { PROXY_STATUS_ERRORS, proxyErrorType, proxyStatusValue, sfString } from '../../src/proxy/proxy-status.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, testCert, type Origin } from '../helpers/origin.js';
import { connect as tlsConnect } from 'node:tls';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { expectProxyStatus, parseHead } from '../helpers/proxy-status.js';
import { openRaw, rawExchange } from '../helpers/raw.js';
import { basicAuth, connectRequest as connect, freedPort, getRequest as get } from '../helpers/requests.js';
import { parseList } from 'structured-headers';

const run = promisify(execFile);

/** RFC 9209 §2.3: every error type the registry defines. */
const REGISTERED = new Set([
  'dns_timeout', 'dns_error', 'destination_not_found', 'destination_unavailable', 'destination_ip_prohibited',
  'destination_ip_unroutable', 'connection_refused', 'connection_terminated', 'connection_timeout',
  'connection_read_timeout', 'connection_write_timeout', 'connection_limit_reached', 'tls_protocol_error',
  'tls_certificate_error', 'tls_alert_received', 'http_request_error', 'http_request_denied',
  'http_response_incomplete', 'http_response_header_section_size', 'http_response_header_size',
  'http_response_body_size', 'http_response_trailer_section_size', 'http_response_trailer_size',
  'http_response_transfer_coding', 'http_response_content_coding', 'http_response_timeout', 'http_upgrade_failed',
  'http_protocol_error', 'proxy_internal_response', 'proxy_internal_error', 'proxy_configuration_error',
  'proxy_loop_detected',
]);

describe('the reason → Proxy-Status table', () => {
  it('maps every reason code except the two allows (rule_allow, approved) to a registered RFC 9209 error type', () => {
    expect(Object.keys(PROXY_STATUS_ERRORS).sort()).toEqual([...REASONS].sort());
    for (const reason of REASONS) {
      const token = PROXY_STATUS_ERRORS[reason];
      if (reason === 'rule_allow' || reason === 'approved') expect(token).toBeNull();
      else expect(REGISTERED.has(token as string), `${reason} → ${token}`).toBe(true);
    }
  });

  it.each([
    ['upstream_error', 502, 'ECONNREFUSED', 'connection_refused'],
    ['upstream_error', 502, 'ECONNRESET', 'connection_terminated'],
    ['upstream_error', 502, 'EHOSTUNREACH', 'destination_unavailable'],
    ['upstream_error', 502, 'ESOMETHINGELSE', 'destination_unavailable'],
    ['upstream_timeout', 504, 'ETIMEDOUT', 'connection_timeout'],
    ['upstream_timeout', 504, 'UND_ERR_CONNECT_TIMEOUT', 'connection_timeout'],
    ['upstream_timeout', 504, 'UND_ERR_HEADERS_TIMEOUT', 'http_response_timeout'],
    ['dns_failure', 502, undefined, 'dns_error'],
    ['dns_failure', 504, undefined, 'dns_timeout'],
    ['rule_deny', 403, 'ECONNREFUSED', 'http_request_denied'],
  ] as const)('%s (%i, cause %s) → %s', (reason, status, cause, token) => {
    expect(proxyErrorType(reason, status, cause)).toBe(token);
    expect(REGISTERED.has(token)).toBe(true);
  });

  it('details is a valid sf-string whatever the message holds: quotes, backslashes and control bytes', () => {
    const nasty = 'say "hi" \\ then\r\nSet-Cookie: x=1\x1b]0;title\x07 — ünïcode';
    const value = proxyStatusValue('http_request_error', nasty);
    expect(value).not.toMatch(/[\r\n\x00-\x1f\x7f-\uffff]/);
    const [[name, params]] = parseList(value);
    expect(String(name)).toBe('agent-egress');
    expect(params.get('details')).toBe('say "hi" \\ then??Set-Cookie: x=1?]0;title? ? ?n?code');
    expect(sfString('x'.repeat(10_000)).length).toBeLessThan(600);
  });
});

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let closedPort: number;
let hangup: Server;
let hangupPort: number;
const dir = mkdtempSync(join(tmpdir(), 'ae-pstatus-'));

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.7'] },
    'meta.test': { A: ['169.254.169.254'] },
    'pinned.example': { A: ['127.0.0.1'] },
    'slow-dns.test': { A: ['127.0.0.1'] },
  });
  dns.setDelay('slow-dns.test', 3_000);
  origin = await startHttpOrigin();
  closedPort = await freedPort();
  // Accepts and hangs up at once: the upstream connection ends before any response.
  hangup = createServer((s) => s.destroy());
  await new Promise<void>((r) => hangup.listen(0, '127.0.0.1', r));
  hangupPort = (hangup.address() as AddressInfo).port;
  const ports = `[${origin.port}, ${closedPort}, ${hangupPort}]`;
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: read-only
    action: allow
    hosts: [ro.example]
    methods: [GET]
    ports: ${ports}
  - name: pinned
    action: allow
    hosts: [pinned.example]
    cidrs: [10.0.0.0/8]
    ports: ${ports}
  - name: tests
    action: allow
    hosts: ["*.test"]
    ports: ${ports}
  - name: no-denied
    action: deny
    hosts: [denied.test]
`,
  );
  proxy = await startTestProxy({
    policyFile: policy,
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { headersTimeoutMs: 600, dnsTimeoutMs: 400, requestIdleMs: 400 },
  });
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await new Promise((r) => hangup?.close(r));
  await dns?.close();
});

const upgrade = (url: string) => `GET ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;

describe('every refusal the proxy writes carries Proxy-Status', () => {
  // [label, request, status, reason, error token]
  const cases: [string, () => string, number, string, string][] = [
    ['CONNECT to a deny rule', () => connect(`denied.test:${origin.port}`), 403, 'rule_deny', 'http_request_denied'],
    ['GET to a deny rule', () => get(`http://denied.test:${origin.port}/`), 403, 'rule_deny', 'http_request_denied'],
    ['Upgrade to a deny rule', () => upgrade(`http://denied.test:${origin.port}/`), 403, 'rule_deny', 'http_request_denied'],
    ['CONNECT with no rule', () => connect('pastebin.com:443'), 403, 'no_rule', 'http_request_denied'],
    ['GET with no rule', () => get('http://pastebin.com/'), 403, 'no_rule', 'http_request_denied'],
    ['a method the rule does not allow', () => `POST http://ro.example:${origin.port}/ HTTP/1.1\r\nHost: ro.example:${origin.port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`, 403, 'method_not_allowed', 'http_request_denied'],
    ['CONNECT to a private address', () => connect(`private.test:${origin.port}`), 403, 'private_address', 'destination_ip_prohibited'],
    ['GET to a metadata address', () => get(`http://meta.test:${origin.port}/`), 403, 'private_address', 'destination_ip_prohibited'],
    ['a name resolving outside its rule CIDRs', () => connect(`pinned.example:${origin.port}`), 403, 'address_not_allowed', 'destination_ip_prohibited'],
    ['CONNECT with unknown credentials', () => connect(`allowed.test:${origin.port}`, basicAuth('nobody', 'x')), 407, 'auth_required', 'http_request_denied'],
    ['GET with unknown credentials', () => get(`http://allowed.test:${origin.port}/`, basicAuth('nobody', 'x')), 407, 'auth_required', 'http_request_denied'],
    ['CONNECT without a port', () => connect('allowed.test'), 400, 'bad_request', 'http_request_error'],
    ['an origin-form request', () => 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 400, 'bad_request', 'http_request_error'],
    ['an unparseable target URL', () => 'GET http://exa mple/ HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'bad_request', 'http_request_error'],
    ['garbage', () => '\x16\x03\x01\x00\xa5\x01\x00garbage\r\n\r\n', 400, 'bad_request', 'http_request_error'],
    ['an oversize head', () => connect('allowed.test:443', `X-Big: ${'a'.repeat(40_000)}\r\n`), 431, 'bad_request', 'http_request_error'],
    ['CONNECT to a name that does not resolve', () => connect(`nowhere.test:${origin.port}`), 502, 'dns_failure', 'dns_error'],
    ['GET to a name that does not resolve', () => get(`http://nowhere.test:${origin.port}/`), 502, 'dns_failure', 'dns_error'],
    ['CONNECT when DNS times out', () => connect(`slow-dns.test:${origin.port}`), 504, 'dns_failure', 'dns_timeout'],
    ['CONNECT to a closed port', () => connect(`allowed.test:${closedPort}`), 502, 'upstream_error', 'connection_refused'],
    ['GET to a closed port', () => get(`http://allowed.test:${closedPort}/`), 502, 'upstream_error', 'connection_refused'],
    ['Upgrade to a closed port', () => upgrade(`http://allowed.test:${closedPort}/`), 502, 'upstream_error', 'connection_refused'],
    ['GET to an upstream that hangs up', () => get(`http://allowed.test:${hangupPort}/`), 502, 'upstream_error', 'connection_terminated'],
    ['GET to an upstream that never answers', () => get(`http://allowed.test:${origin.port}/slow`), 504, 'upstream_timeout', 'http_response_timeout'],
  ];

  it.each(cases)('%s', async (_label, request, status, reason, token) => {
    const res = parseHead(await rawExchange(proxy.port, request()));
    expect(res.status).toBe(status);
    const { decision, details } = expectProxyStatus(res.headers, token, reason);
    const rec = await proxy.sink.waitFor((r) => r.id === decision);
    expect(rec).toMatchObject({ reason, status });
    // The details say what the body says, so a client reading only the header learns the same.
    expect(res.body).toContain(details.slice(0, details.indexOf(' (reason')));
  });

  it('a slow request head (408)', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write('CONNECT allowed.test:443 HTTP/1.1\r\nX-Slow: ');
    const raw = await s.read(/\r\n\r\n/, 5_000);
    s.socket.destroy();
    const res = parseHead(raw);
    expect(res.status).toBe(408);
    expectProxyStatus(res.headers, 'http_request_error', 'bad_request');
  });

  it('curl sees it on a refused CONNECT and on a refused plain request', async () => {
    const plain = await run('curl', ['-s', '-D', '-', '-o', '/dev/null', '--max-time', '5', '-x', proxy.url, 'http://denied.test/'], { encoding: 'utf8' });
    expect(plain.stdout).toMatch(/^proxy-status: agent-egress; error=http_request_denied; details="[^"\r\n]*reason rule_deny/im);
    const tunnel = await run('curl', ['-s', '-v', '-o', '/dev/null', '--max-time', '5', '-p', '-x', proxy.url, 'https://pastebin.com/'], { encoding: 'utf8' }).catch(
      (e: { stderr: string }) => e,
    );
    expect(tunnel.stderr).toMatch(/proxy-status: agent-egress; error=http_request_denied; details="[^"\r\n]*reason no_rule/i);
  });
});

describe('refusals at admission and shutdown', () => {
  let limited: TestProxy;
  beforeAll(async () => {
    limited = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { maxConnectionsPerClient: 1, shutdownGraceMs: 3_000 },
    });
  });
  afterAll(() => limited?.close());

  it('a connection over the limit (503 limit_exceeded)', async () => {
    const held = await openRaw(limited.port);
    const res = parseHead(await rawExchange(limited.port, get(`http://allowed.test:${origin.port}/`)));
    held.socket.destroy();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toEqual(['1']);
    const { decision } = expectProxyStatus(res.headers, 'connection_limit_reached', 'limit_exceeded');
    expect((await limited.sink.waitFor((r) => r.id === decision)).reason).toBe('limit_exceeded');
  });

  it('a request arriving while the proxy drains (503 shutting_down)', async () => {
    await new Promise((r) => setTimeout(r, 100)); // the held socket of the last test has gone
    const shutdown = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { shutdownGraceMs: 3_000 },
    });
    // An open tunnel keeps the proxy draining; a second connection has started its request head.
    const tunnel = await openRaw(shutdown.port);
    tunnel.socket.write(connect(`allowed.test:${origin.port}`));
    expect(await tunnel.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    const late = await openRaw(shutdown.port);
    late.socket.write(`CONNECT allowed.test:${origin.port} HTTP/1.1\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    const closing = shutdown.close();
    late.socket.write('\r\n');
    const res = parseHead(await late.read('\r\n\r\n'));
    tunnel.socket.destroy();
    await closing;
    expect(res.status).toBe(503);
    expectProxyStatus(res.headers, 'proxy_internal_error', 'shutting_down');
  });
});

describe('refusals on the TLS listener', () => {
  let tlsProxy: TestProxy;
  beforeAll(async () => {
    const { key, cert } = testCert();
    writeFileSync(join(dir, 'key.pem'), key);
    writeFileSync(join(dir, 'cert.pem'), cert);
    tlsProxy = await startTestProxy({
      flags: { allow: [`allowed.test:${origin.port}`], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
      tls: { certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') },
    });
  });
  afterAll(() => tlsProxy?.close());

  it('a refusal inside TLS carries it like on the plain listener', async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ port: tlsProxy.port, host: '127.0.0.1', ca: testCert().cert, servername: 'localhost' }, () => s.write(connect('pastebin.com:443')));
      let b = '';
      s.on('data', (c) => (b += c.toString('latin1')));
      s.on('close', () => resolve(b));
      s.on('error', reject);
    });
    const res = parseHead(raw);
    expect(res.status).toBe(403);
    expectProxyStatus(res.headers, 'http_request_denied', 'no_rule');
  });

  it('plain HTTP sent to the TLS listener gets a 400 that says to use https://, with a record', async () => {
    const res = parseHead(await rawExchange(tlsProxy.port, get(`http://allowed.test:${origin.port}/`)));
    expect(res.status).toBe(400);
    expect(res.body).toMatch(/speaks TLS: use an https:\/\/ proxy URL/);
    const { decision } = expectProxyStatus(res.headers, 'http_request_error', 'bad_request');
    const rec = await tlsProxy.sink.waitFor((r) => r.id === decision);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'bad_request', status: 400, method: 'UNPARSED' });
  });
});
