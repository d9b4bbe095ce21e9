import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTransparentListen, TransparentConfigError } from '../../src/capture/mapping.js';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { slowHelloDuplex } from './hello.js';

let dns: TestDnsServer;
let tlsOrigin: Origin;
let httpOrigin: Origin;
let proxy: TestProxy;
/** The listener standing for a captured port (the origin's port: the proxy dials the name on it). */
let listenerFor: (capturedPort: number) => number;

function policyFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ae-transparent-'));
  writeFileSync(join(dir, 'policy.yaml'), text);
  return join(dir, 'policy.yaml');
}

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
    'elsewhere.test': { A: ['127.0.0.1'] },
  });
  tlsOrigin = await startHttpsOrigin();
  httpOrigin = await startHttpOrigin();
  const policy = policyFile(`version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: allowed
    action: allow
    hosts: [allowed.test, denied.test]
    ports: [${tlsOrigin.port}, ${httpOrigin.port}]
  - name: no-denied
    action: deny
    hosts: [denied.test]
`);
  proxy = await startTestProxy({
    policyFile: policy,
    dnsServers: [`127.0.0.1:${dns.port}`],
    limits: { headersTimeoutMs: 1000 },
    transparent: parseTransparentListen(['127.0.0.1:0'], `${tlsOrigin.port},${httpOrigin.port}`),
  });
  listenerFor = (p) => {
    const b = proxy.transparent.find((x) => x.capturedPort === p);
    if (!b) throw new Error(`no listener for ${p}`);
    return b.port;
  };
});

afterAll(async () => {
  await proxy?.close();
  await tlsOrigin?.close();
  await httpOrigin?.close();
  await dns?.close();
});

const after = (n: number, pred: (r: DecisionRecord) => boolean) => proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= n && pred(r));

/** TLS to the listener as if the firewall had redirected it; resolves with the answer to GET /. */
function tlsGet(servername: string, socket?: Duplex): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = tlsConnect({
      ...(socket ? { socket: socket as Socket } : { host: '127.0.0.1', port: listenerFor(tlsOrigin.port) }),
      servername,
      ca: testCert().cert,
      checkServerIdentity: () => undefined,
    });
    let body = '';
    t.on('secureConnect', () => t.write('GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n'));
    t.on('data', (d) => (body += d));
    t.on('end', () => resolve(body));
    t.on('error', reject);
  });
}

/** Raw bytes to a listener; everything it answers, until it closes. */
function raw(port: number, data: string | Buffer | null): Promise<string> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    if (data !== null) s.write(data);
  });
}

describe('transparent listener: TLS', () => {
  it('a ClientHello with an allowed SNI reaches the origin at the address the proxy resolved; the record says capture: transparent', async () => {
    const n = proxy.sink.records.length;
    expect(await tlsGet('allowed.test')).toMatch(/hello$/);
    const rec = await after(n, (r) => r.capture === 'transparent' && r.bytesDown > 0);
    expect(rec).toMatchObject({
      method: 'TRANSPARENT',
      capture: 'transparent',
      host: 'allowed.test',
      port: tlsOrigin.port,
      verdict: 'allow',
      reason: 'rule_allow',
      rule: 'allowed',
      address: '127.0.0.1',
      detail: { protocol: 'tls', sni: 'allowed.test' },
    });
    expect(dns.queries.some((q) => q.name.toLowerCase() === 'allowed.test')).toBe(true);
  });

  it('a denied SNI is refused with a TLS alert and recorded, before any lookup', async () => {
    const n = proxy.sink.records.length;
    await expect(tlsGet('denied.test')).rejects.toThrow(/alert|access denied|socket/i);
    const rec = await after(n, (r) => r.capture === 'transparent' && r.host === 'denied.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'no-denied', port: tlsOrigin.port, bytesUp: 0, address: null });
    expect(dns.queries.some((q) => q.name.toLowerCase() === 'denied.test')).toBe(false);
  });

  it('a name with no rule is refused no_rule', async () => {
    const n = proxy.sink.records.length;
    await expect(tlsGet('elsewhere.test')).rejects.toThrow();
    expect(await after(n, (r) => r.host === 'elsewhere.test')).toMatchObject({ reason: 'no_rule', capture: 'transparent' });
  });

  it('a ClientHello in several records and segments, with delays, still works', async () => {
    const s = netConnect(listenerFor(tlsOrigin.port), '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const slow = slowHelloDuplex(s, [20, 40, 60], 30);
    expect(await tlsGet('allowed.test', slow)).toMatch(/hello$/);
  });
});

describe('transparent listener: plain HTTP', () => {
  it('curl with no proxy settings, "redirected" to the listener, reaches an allowed Host', async () => {
    const n = proxy.sink.records.length;
    const out = await new Promise<string>((resolve) =>
      execFile(
        'curl',
        ['-s', '--noproxy', '*', '--connect-to', `allowed.test:${httpOrigin.port}:127.0.0.1:${listenerFor(httpOrigin.port)}`, `http://allowed.test:${httpOrigin.port}/`],
        (_e, so) => resolve(so),
      ),
    );
    expect(out).toBe('hello');
    const rec = await after(n, (r) => r.capture === 'transparent' && r.detail?.protocol === 'http' && r.verdict === 'allow');
    expect(rec).toMatchObject({ host: 'allowed.test', port: httpOrigin.port, detail: { hostHeader: `allowed.test:${httpOrigin.port}` } });
  });

  it('a denied Host gets a 403 naming the reason', async () => {
    const n = proxy.sink.records.length;
    const out = await raw(listenerFor(httpOrigin.port), 'GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 403 /);
    expect(out).toMatch(/X-Agent-Egress-Reason: rule_deny/);
    expect(await after(n, (r) => r.capture === 'transparent' && r.host === 'denied.test')).toMatchObject({ reason: 'rule_deny', status: 403 });
  });

  it('a Host naming another port than the captured one is refused host_mismatch', async () => {
    const n = proxy.sink.records.length;
    const out = await raw(listenerFor(httpOrigin.port), `GET / HTTP/1.1\r\nHost: allowed.test:${tlsOrigin.port}\r\n\r\n`);
    expect(out).toMatch(/X-Agent-Egress-Reason: host_mismatch/);
    expect(await after(n, (r) => r.capture === 'transparent' && r.reason === 'host_mismatch')).toMatchObject({ verdict: 'deny' });
  });

  it('an absolute-form target naming another host than Host is refused by the content check', async () => {
    const n = proxy.sink.records.length;
    const out = await raw(listenerFor(httpOrigin.port), `GET http://elsewhere.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n`);
    expect(out).toMatch(/X-Agent-Egress-Reason: host_mismatch/);
    expect(await after(n, (r) => r.capture === 'transparent' && r.reason === 'host_mismatch' && r.host === 'allowed.test')).toMatchObject({ bytesUp: 0 });
  });
});

describe('transparent listener: no name', () => {
  it.each([
    ['a ClientHello without SNI', async () => {
      await expect(tlsGet('')).rejects.toThrow();
    }, 'tls'],
    ['a client that sends nothing', async () => {
      expect(await raw(listenerFor(tlsOrigin.port), null)).toBe('');
    }, 'none'],
    ['an SSH banner', async () => {
      expect(await raw(listenerFor(tlsOrigin.port), 'SSH-2.0-OpenSSH_9.2\r\n')).toBe('');
    }, 'ssh'],
    ['an HTTP request without Host', async () => {
      expect(await raw(listenerFor(httpOrigin.port), 'GET / HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 [\s\S]*no_name/);
    }, 'http'],
  ])('%s is refused no_name and recorded', async (_name, act, protocol) => {
    const n = proxy.sink.records.length;
    await act();
    const rec = await after(n, (r) => r.capture === 'transparent' && r.reason === 'no_name');
    expect(rec).toMatchObject({ verdict: 'deny', host: '', detail: { protocol } });
  });
});

describe('transparent listener: mappings, identity, health', () => {
  it('parses HOST:PORT as PORT+i per captured port, and the explicit PORT=HOST:PORT form', () => {
    expect(parseTransparentListen(['127.0.0.1:3130'])).toEqual([
      { capturedPort: 80, host: '127.0.0.1', port: 3130 },
      { capturedPort: 443, host: '127.0.0.1', port: 3131 },
    ]);
    expect(parseTransparentListen(['[::1]:4000'], '443,8443,80')).toEqual([
      { capturedPort: 443, host: '::1', port: 4000 },
      { capturedPort: 8443, host: '::1', port: 4001 },
      { capturedPort: 80, host: '::1', port: 4002 },
    ]);
    expect(parseTransparentListen(['127.0.0.1:0'], '80,443').map((m) => m.port)).toEqual([0, 0]);
    expect(parseTransparentListen(['443=127.0.0.1:3130', '80=127.0.0.1:3200'])).toEqual([
      { capturedPort: 443, host: '127.0.0.1', port: 3130 },
      { capturedPort: 80, host: '127.0.0.1', port: 3200 },
    ]);
    for (const [v, p] of [
      [['127.0.0.1:65535'], undefined],
      [['127.0.0.1:3130', '127.0.0.1:3140'], undefined],
      [['443=127.0.0.1:1', '127.0.0.1:2'], undefined],
      [['443=127.0.0.1:1', '443=127.0.0.1:2'], undefined],
      [['443=127.0.0.1:1'], '443'],
      [['127.0.0.1:1'], '80,80'],
      [['127.0.0.1:1'], '0'],
      [['nonsense'], undefined],
      [[], '443'],
    ] as [string[], string | undefined][]) {
      expect(() => parseTransparentListen(v, p), JSON.stringify(v)).toThrow(TransparentConfigError);
    }
  });

  it('the explicit form binds each captured port to its own address; /healthz shows the mapping; require_auth refuses auth_required', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-transparent-store-'));
    const p = await startTestProxy({
      policyFile: policyFile(`version: 1
require_auth: true
address_guard: { exempt: [127.0.0.1/32] }
agents:
  - name: a
    token_sha256: "${'0'.repeat(64)}"
rules:
  - name: allowed
    action: allow
    hosts: [allowed.test]
    ports: [${tlsOrigin.port}]
`),
      dnsServers: [`127.0.0.1:${dns.port}`],
      transparent: parseTransparentListen([`${tlsOrigin.port}=127.0.0.1:0`, '8080=127.0.0.1:0']),
      store: { dataDir: dir },
      admin: { listen: '127.0.0.1:0', noAuth: true },
    });
    try {
      const b = p.transparent;
      expect(b.map((x) => x.capturedPort)).toEqual([tlsOrigin.port, 8080]);
      expect(new Set(b.map((x) => x.port)).size).toBe(2);
      const health = (await (await fetch(`${p.admin!.url}/healthz`)).json()) as { transparent: unknown };
      expect(health.transparent).toEqual(b.map((x) => ({ capturedPort: x.capturedPort, address: '127.0.0.1', port: x.port })));

      const n = p.sink.records.length;
      await expect(
        new Promise((resolve, reject) => {
          const t = tlsConnect({ host: '127.0.0.1', port: b[0].port, servername: 'allowed.test', ca: testCert().cert });
          t.on('secureConnect', resolve);
          t.on('error', reject);
        }),
      ).rejects.toThrow();
      const rec = await p.sink.waitFor((r) => p.sink.records.indexOf(r) >= n && r.capture === 'transparent');
      expect(rec).toMatchObject({ reason: 'auth_required', host: 'allowed.test', verdict: 'deny' });
      // The field survives the store and the API.
      await new Promise((r) => setTimeout(r, 300));
      const api = (await (await fetch(`${p.admin!.url}/api/decisions?reason=auth_required`)).json()) as { records: DecisionRecord[] };
      expect(api.records.find((r) => r.id === rec.id)).toMatchObject({ capture: 'transparent', method: 'TRANSPARENT' });
    } finally {
      await p.close();
    }
  });

  it('shutdown ends an open transparent tunnel after the grace period, and its record is written', async () => {
    const p = await startTestProxy({
      policyFile: policyFile(`version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: allowed\n    action: allow\n    hosts: [allowed.test]\n    ports: [${tlsOrigin.port}]\n`),
      dnsServers: [`127.0.0.1:${dns.port}`],
      limits: { shutdownGraceMs: 300 },
      transparent: parseTransparentListen([`${tlsOrigin.port}=127.0.0.1:0`]),
    });
    const t = tlsConnect({ host: '127.0.0.1', port: p.transparent[0].port, servername: 'allowed.test', ca: testCert().cert });
    t.on('error', () => undefined);
    const closed = new Promise((r) => t.on('close', r));
    await new Promise((r) => t.once('secureConnect', r));
    // Keep-alive: the origin leaves the tunnel open after answering.
    t.write('GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    await new Promise((r) => t.once('data', r));
    expect(p.sink.records.some((r) => r.capture === 'transparent')).toBe(false);
    await p.close();
    await closed;
    expect(p.sink.records.find((r) => r.capture === 'transparent')).toMatchObject({ verdict: 'allow', host: 'allowed.test' });
    expect(p.sink.records.find((r) => r.capture === 'transparent')!.bytesDown).toBeGreaterThan(0);
  });

  it('the guard refuses the listeners themselves as destinations', () => {
    const ctx = proxy.egress.context();
    for (const b of proxy.egress.transparent!.bindings) expect(ctx.guard.check(b.address, b.port)).toMatchObject({ ok: false, range: 'self' });
  });
});
