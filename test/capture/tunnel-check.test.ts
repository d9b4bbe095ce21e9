import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { captureClientHello, slowHelloDuplex } from './hello.js';
import { connectVia, requestDomain } from './socks-helpers.js';

let dns: TestDnsServer;
let tlsOrigin: Origin;
let httpOrigin: Origin;
let ssh: Server;
let sshPort: number;
let proxy: TestProxy;

/** A stand-in SSH server: sends its banner at once (as real ones do) and echoes what it gets. */
function startSshOrigin(): Promise<Server> {
  const s = createServer((c) => {
    c.write('SSH-2.0-TestServer\r\n');
    c.on('data', (d) => c.write(d));
    c.on('error', () => undefined);
  });
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r(s)));
}

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'other.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
    'ssh.test': { A: ['127.0.0.1'] },
    'opaque.test': { A: ['127.0.0.1'] },
  });
  tlsOrigin = await startHttpsOrigin();
  httpOrigin = await startHttpOrigin();
  ssh = await startSshOrigin();
  sshPort = (ssh.address() as AddressInfo).port;
  const ports = `[${tlsOrigin.port}, ${httpOrigin.port}, ${sshPort}]`;
  const dir = mkdtempSync(join(tmpdir(), 'ae-tcheck-'));
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: names
    action: allow
    hosts: [allowed.test, other.test, denied.test]
    ports: ${ports}
  - name: by-address
    action: allow
    cidrs: [127.0.0.1/32]
    ports: ${ports}
  - name: ssh-ok
    action: allow
    hosts: [ssh.test]
    ports: [${sshPort}]
    protocols: [ssh]
  - name: anything
    action: allow
    hosts: [opaque.test]
    ports: [${sshPort}]
    protocols: [any]
  - name: no-denied
    action: deny
    hosts: [denied.test]
    ports: [${tlsOrigin.port}]
`,
  );
  proxy = await startTestProxy({ policyFile: policy, dnsServers: [`127.0.0.1:${dns.port}`], limits: { headersTimeoutMs: 1500 }, socks: { listen: '127.0.0.1:0' } });
});

afterAll(async () => {
  await proxy?.close();
  await tlsOrigin?.close();
  await httpOrigin?.close();
  await new Promise((r) => ssh?.close(r));
  await dns?.close();
});

const after = (n: number, pred: (r: DecisionRecord) => boolean) => proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= n && pred(r));

function sslClient(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = execFile('openssl', ['s_client', '-proxy', `127.0.0.1:${proxy.port}`, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
    p.stdin?.end();
  });
}

/** A CONNECT tunnel through the proxy, past its 200: what arrives after the head, and when it closes. */
interface Tunnel {
  socket: Socket;
  got(): string;
  closed: Promise<void>;
}
async function open(authority: string): Promise<Tunnel> {
  const socket = netConnect(proxy.port, '127.0.0.1');
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  let buf = '';
  let headDone = false;
  let rest = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      if (headDone) return void (rest += d.toString('latin1'));
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n\r\n');
      if (i === -1) return;
      headDone = true;
      if (!/^HTTP\/1\.1 200 /.test(buf)) reject(new Error(`CONNECT answered ${buf.slice(0, 80)}`));
      rest = buf.slice(i + 4);
      resolve();
    });
    socket.once('close', () => reject(new Error('closed before the 200')));
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
  return { socket, got: () => rest, closed };
}

/** A tunnel as a plain socket for TLS: the bytes after the head are handed on through a Duplex. */
async function tunnel(authority: string): Promise<Duplex> {
  const t = await open(authority);
  t.socket.removeAllListeners('data');
  const d = new Duplex({
    read() {},
    write(chunk, _e, cb) {
      t.socket.write(chunk, () => cb());
    },
    final(cb) {
      t.socket.end();
      cb();
    },
    destroy(err, cb) {
      t.socket.destroy();
      cb(err);
    },
  });
  if (t.got()) d.push(Buffer.from(t.got(), 'latin1'));
  t.socket.on('data', (c) => d.push(c));
  t.socket.on('end', () => d.push(null));
  t.socket.on('close', () => d.destroy());
  return d;
}

/** TLS over a tunnel; resolves with the origin's answer to GET /, or rejects with the TLS error. */
function tlsGet(sock: Duplex, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t: TLSSocket = tlsConnect({ socket: sock as Socket, servername, ca: testCert().cert, checkServerIdentity: () => undefined });
    let body = '';
    t.on('secureConnect', () => t.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    t.on('data', (d) => (body += d));
    t.on('end', () => resolve(body));
    t.on('close', () => resolve(body));
    t.on('error', reject);
  });
}

describe('tunnel content check: TLS', () => {
  it('openssl s_client -servername denied through CONNECT allowed is refused sni_mismatch and recorded', async () => {
    const n = proxy.sink.records.length;
    const r = await sslClient(['-connect', `allowed.test:${tlsOrigin.port}`, '-servername', 'denied.test']);
    expect(r.out).toMatch(/unrecognized name|alert/i);
    const rec = await after(n, (x) => x.detail?.sni === 'denied.test' && x.host === 'allowed.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'sni_mismatch', host: 'allowed.test', rule: null, bytesUp: 0 });
    expect(rec.detail).toMatchObject({ protocol: 'tls', sni: 'denied.test', tunnelRule: 'names' });
    expect(String(rec.detail?.error)).toMatch(/authorised for allowed\.test/);
  });

  it('openssl s_client -servername allowed through CONNECT allowed completes the handshake', async () => {
    const n = proxy.sink.records.length;
    const r = await sslClient(['-connect', `allowed.test:${tlsOrigin.port}`, '-servername', 'allowed.test']);
    expect(r.out).toMatch(/CN ?= ?localhost/);
    const rec = await after(n, (x) => x.detail?.sni === 'allowed.test' && x.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'rule_allow', host: 'allowed.test' });
    expect(rec.bytesDown).toBeGreaterThan(500);
    expect(rec.detail).toMatchObject({ protocol: 'tls', sni: 'allowed.test' });
  });

  it('node:tls with another (even allowed) servername is refused; case and trailing dot do not matter', async () => {
    const n = proxy.sink.records.length;
    await expect(tlsGet(await tunnel(`allowed.test:${tlsOrigin.port}`), 'other.test')).rejects.toThrow();
    const rec = await after(n, (x) => x.detail?.sni === 'other.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'sni_mismatch' });
    expect(rec.detail).toMatchObject({ sni: 'other.test' });
    expect(await tlsGet(await tunnel(`allowed.test:${tlsOrigin.port}`), 'ALLOWED.test.')).toMatch(/hello$/);
  });

  it('CONNECT to an IP literal: an allowed SNI passes, a denied or unknown SNI is refused, no SNI passes', async () => {
    const ip = `127.0.0.1:${tlsOrigin.port}`;
    let n = proxy.sink.records.length;
    expect(await tlsGet(await tunnel(ip), 'allowed.test')).toMatch(/hello$/);
    expect(await after(n, (x) => x.host === '127.0.0.1' && x.detail?.sni === 'allowed.test')).toMatchObject({ verdict: 'allow', host: '127.0.0.1', detail: { sni: 'allowed.test' } });

    n = proxy.sink.records.length;
    await expect(tlsGet(await tunnel(ip), 'denied.test')).rejects.toThrow();
    let rec = await after(n, (x) => x.host === '127.0.0.1' && x.detail?.sni === 'denied.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'sni_mismatch', host: '127.0.0.1', detail: { sni: 'denied.test' } });
    expect(String(rec.detail?.error)).toMatch(/rule_deny, rule no-denied/);

    n = proxy.sink.records.length;
    await expect(tlsGet(await tunnel(ip), 'nowhere.example')).rejects.toThrow();
    rec = await after(n, (x) => x.host === '127.0.0.1' && x.detail?.sni === 'nowhere.example');
    expect(rec).toMatchObject({ reason: 'sni_mismatch', detail: { sni: 'nowhere.example' } });
    expect(String(rec.detail?.error)).toMatch(/no_rule/);

    n = proxy.sink.records.length;
    // servername '' sends no SNI at all.
    expect(await tlsGet(await tunnel(ip), '')).toMatch(/hello$/);
    expect(await after(n, (x) => x.host === '127.0.0.1' && x.detail?.sni === null)).toMatchObject({ verdict: 'allow', detail: { protocol: 'tls', sni: null } });
  });

  it('a ClientHello split over several TLS records and TCP segments, written with delays, still works', async () => {
    const t = await open(`allowed.test:${tlsOrigin.port}`);
    t.socket.removeAllListeners('data');
    const slow = slowHelloDuplex(t.socket, [30, 50, 70], 40);
    const n = proxy.sink.records.length;
    expect(await tlsGet(slow, 'allowed.test')).toMatch(/hello$/);
    expect(await after(n, (x) => x.detail?.sni === 'allowed.test' && x.bytesDown > 0)).toMatchObject({ verdict: 'allow', detail: { sni: 'allowed.test' } });
  });

  it('a client that speaks only after a delay (within the header timeout) works', async () => {
    const sock = await tunnel(`allowed.test:${tlsOrigin.port}`);
    await new Promise((r) => setTimeout(r, 500));
    expect(await tlsGet(sock, 'allowed.test')).toMatch(/hello$/);
  });

  it('fuzzed ClientHellos through tunnels never crash the proxy, and each tunnel is recorded', async () => {
    const base = await captureClientHello('node', 'allowed.test');
    let seed = 99;
    const rand = (k: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % k);
    const n = proxy.sink.records.length;
    const N = 60;
    await Promise.all(
      Array.from({ length: N }, async () => {
        const b = Buffer.from(base);
        for (let e = 0; e < 1 + rand(3); e++) b[5 + rand(b.length - 5)] = rand(256);
        const t = await open(`allowed.test:${tlsOrigin.port}`);
        t.socket.end(b);
        await t.closed;
      }),
    );
    const fuzzed = (r: DecisionRecord) => r.method === 'CONNECT' && r.bytesDown === 0;
    await proxy.sink.waitFor(() => proxy.sink.records.slice(n).filter(fuzzed).length >= N, 10_000);
    const reasons = new Set(proxy.sink.records.slice(n).filter(fuzzed).map((r) => r.reason));
    expect([...reasons].every((r) => ['bad_request', 'sni_mismatch', 'rule_allow', 'protocol_not_allowed'].includes(r))).toBe(true);
    expect(reasons.has('bad_request')).toBe(true);
    // Still serving.
    expect(await tlsGet(await tunnel(`allowed.test:${tlsOrigin.port}`), 'allowed.test')).toMatch(/hello$/);
  });
});

describe('tunnel content check: plain HTTP', () => {
  it('undici tunnels http:// through CONNECT with a matching Host', async () => {
    const n = proxy.sink.records.length;
    const dispatcher = new ProxyAgent({ uri: proxy.url });
    const res = await undiciFetch(`http://allowed.test:${httpOrigin.port}/`, { dispatcher });
    expect(await res.text()).toBe('hello');
    await dispatcher.close();
    const rec = await after(n, (x) => x.detail?.protocol === 'http' && x.verdict === 'allow');
    expect(rec).toMatchObject({ verdict: 'allow', host: 'allowed.test', detail: { protocol: 'http', hostHeader: `allowed.test:${httpOrigin.port}` } });
  });

  it('curl --proxytunnel with a mismatched Host is refused host_mismatch with a 403 inside the tunnel', async () => {
    const n = proxy.sink.records.length;
    const out = await new Promise<string>((resolve) =>
      execFile('curl', ['-s', '-i', '-p', '-x', proxy.url, '-H', 'Host: other.test', `http://allowed.test:${httpOrigin.port}/`], (_e, so) => resolve(so)),
    );
    expect(out).toMatch(/HTTP\/1\.1 403 /);
    expect(out).toMatch(/X-Agent-Egress-Reason: host_mismatch/);
    const rec = await after(n, (x) => x.reason === 'host_mismatch');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'host_mismatch', status: 403, bytesUp: 0, detail: { hostHeader: 'other.test' } });
    expect(httpOrigin.seen.some((s) => s.headers.host === 'other.test')).toBe(false);
  });

  it('curl --proxytunnel with the matching Host works', async () => {
    const out = await new Promise<string>((resolve) =>
      execFile('curl', ['-s', '-p', '-x', proxy.url, `http://allowed.test:${httpOrigin.port}/`], (_e, so) => resolve(so)),
    );
    expect(out).toBe('hello');
  });

  it.each([
    ['a Host with another port', (p: number) => `GET / HTTP/1.1\r\nHost: allowed.test:${p + 1}\r\n\r\n`],
    ['no Host', () => 'GET / HTTP/1.0\r\n\r\n'],
    ['an absolute-form target naming another host', (p: number) => `GET http://other.test:${p}/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n`],
  ])('%s is refused host_mismatch', async (_name, req) => {
    const n = proxy.sink.records.length;
    const t = await open(`allowed.test:${httpOrigin.port}`);
    t.socket.write(req(httpOrigin.port));
    await t.closed;
    expect(t.got()).toMatch(/^HTTP\/1\.1 403 /);
    expect(await after(n, (x) => x.reason === 'host_mismatch')).toMatchObject({ verdict: 'deny', reason: 'host_mismatch' });
  });
});

describe('tunnel content check: other protocols', () => {
  async function sshThrough(authority: string): Promise<string> {
    const t = await open(authority);
    t.socket.write('SSH-2.0-OpenSSH_9.2\r\n');
    await new Promise((r) => setTimeout(r, 300));
    t.socket.end();
    await t.closed;
    return t.got();
  }

  it('an SSH banner on a rule without protocols is refused protocol_not_allowed, naming the rule', async () => {
    const n = proxy.sink.records.length;
    expect(await sshThrough(`allowed.test:${sshPort}`)).toBe('');
    const rec = await after(n, (x) => x.reason === 'protocol_not_allowed' && x.detail?.protocol === 'ssh');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'protocol_not_allowed', rule: 'names', bytesUp: 0, detail: { protocol: 'ssh' } });
  });

  it('an SSH banner passes for a rule with protocols: [ssh], relayed unchanged', async () => {
    const got = await sshThrough(`ssh.test:${sshPort}`);
    expect(got).toBe('SSH-2.0-TestServer\r\nSSH-2.0-OpenSSH_9.2\r\n');
  });

  it('protocols: [ssh] refuses TLS', async () => {
    const n = proxy.sink.records.length;
    const hello = await captureClientHello('node', 'ssh.test');
    const t = await open(`ssh.test:${sshPort}`);
    t.socket.end(hello);
    await t.closed;
    expect(await after(n, (x) => x.rule === 'ssh-ok' && x.reason === 'protocol_not_allowed')).toMatchObject({ reason: 'protocol_not_allowed', rule: 'ssh-ok', detail: { protocol: 'tls' } });
  });

  it('protocols: [any] lets a server-speaks-first protocol through at once', async () => {
    const t = await open(`opaque.test:${sshPort}`);
    await new Promise((r) => setTimeout(r, 300));
    expect(t.got()).toBe('SSH-2.0-TestServer\r\n');
    t.socket.end('\u0000\u0001binary');
    await t.closed;
  });

  it('a client that sends nothing within the header timeout is refused when a protocol is required', async () => {
    const n = proxy.sink.records.length;
    const t = await open(`allowed.test:${sshPort}`);
    await t.closed;
    // The server's banner is never relayed: nothing was checked.
    expect(t.got()).toBe('');
    const rec = await after(n, (x) => x.reason === 'protocol_not_allowed' && x.detail?.protocol === 'none');
    expect(rec).toMatchObject({ reason: 'protocol_not_allowed', detail: { protocol: 'none', bytes: 0 } });
    expect(String(rec.detail?.error)).toMatch(/sent nothing within 1500 ms/);
  });

  it('a custom binary protocol is refused', async () => {
    const n = proxy.sink.records.length;
    const t = await open(`allowed.test:${sshPort}`);
    t.socket.end(Buffer.from([0, 1, 2, 3, 4]));
    await t.closed;
    expect(await after(n, (x) => x.reason === 'protocol_not_allowed' && x.detail?.protocol === 'other')).toMatchObject({ reason: 'protocol_not_allowed', detail: { protocol: 'other' } });
  });
});

describe('tunnel content check: SOCKS5 tunnels go through it too', () => {
  it('a ClientHello naming another server through SOCKS5 is refused sni_mismatch; pipelined bytes are checked too', async () => {
    const socksPort = proxy.egress.socks!.address.port;
    const other = await captureClientHello('node', 'other.test');
    let n = proxy.sink.records.length;
    const { c, code } = await connectVia(socksPort, requestDomain('allowed.test', tlsOrigin.port));
    expect(code).toBe(0);
    c.write(other);
    await c.untilClosed();
    expect(await after(n, (r) => r.method === 'SOCKS5' && r.reason === 'sni_mismatch')).toMatchObject({ host: 'allowed.test', bytesUp: 0, detail: { sni: 'other.test' } });

    // Greeting, request and the hello in one segment: the hello never goes upstream unchecked.
    n = proxy.sink.records.length;
    const raw = netConnect(socksPort, '127.0.0.1');
    raw.on('error', () => undefined);
    const closed = new Promise((r) => raw.on('close', r));
    raw.resume();
    raw.write(Buffer.concat([Buffer.from([5, 1, 0]), requestDomain('allowed.test', tlsOrigin.port), other]));
    await closed;
    expect(await after(n, (r) => r.method === 'SOCKS5' && r.reason === 'sni_mismatch')).toMatchObject({ bytesUp: 0 });
  });

  it('the matching name through SOCKS5 completes TLS', async () => {
    const { c, code } = await connectVia(proxy.egress.socks!.address.port, requestDomain('allowed.test', tlsOrigin.port));
    expect(code).toBe(0);
    c.socket.removeAllListeners('data');
    expect(await tlsGet(c.socket, 'allowed.test')).toMatch(/hello$/);
  });
});

