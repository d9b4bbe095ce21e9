import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInspectionCa } from '../../src/inspect/ca.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { PolicyError } from '../../src/policy/types.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

describe('policy: protocols', () => {
  const rule = (extra: string) => `version: 1\nrules:\n  - name: r\n    action: allow\n    hosts: [a.example]\n${extra}`;
  it('reads the list, drops duplicates, and leaves rules without it at the default', () => {
    expect(parsePolicyText(rule('    protocols: [ssh, tls, ssh]\n'), 'p.yaml').rules[0].protocols).toEqual(['ssh', 'tls']);
    expect(parsePolicyText(rule(''), 'p.yaml').rules[0].protocols).toBeNull();
  });
  it.each([
    ['an unknown protocol', '    protocols: [tls, smtp]\n', /p\.yaml:6:\d+: .*must be one of: tls, http, ssh, any/],
    ['an empty list', '    protocols: []\n', /p\.yaml:6:\d+: .*must not be empty/],
    ['a deny rule', '    protocols: [ssh]\n', /p\.yaml:6:\d+: .*protocols only applies to allow rules/, 'deny'],
    ['an inspect rule', '    inspect: true\n    protocols: [tls]\n', /p\.yaml:7:\d+: .*protocols does not apply to an inspect rule/],
  ])('refuses %s with file and line', (_n, extra, want, action = 'allow') => {
    const text = rule(extra).replace('action: allow', `action: ${action}`);
    let err: unknown;
    try {
      parsePolicyText(text, 'p.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as Error).message).toMatch(want);
  });
});

let dns: TestDnsServer;
let origin: Origin;
let report: TestProxy;
let inspecting: TestProxy;
const dir = mkdtempSync(join(tmpdir(), 'ae-tcheck-modes-'));

beforeAll(async () => {
  dns = await startTestDnsServer({ 'allowed.test': { A: ['127.0.0.1'] } });
  origin = await startHttpsOrigin();
  writeFileSync(join(dir, 'origin.pem'), testCert().cert);
  await createInspectionCa(dir, { days: 2, force: false });
  const policy = (name: string, text: string) => (writeFileSync(join(dir, name), text), join(dir, name));
  report = await startTestProxy({
    policyFile: policy('report.yaml', `version: 1\nmode: report\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: names\n    action: allow\n    hosts: [allowed.test]\n    ports: [${origin.port}]\n`),
    dnsServers: [`127.0.0.1:${dns.port}`],
  });
  inspecting = await startTestProxy({
    policyFile: policy('inspect.yaml', `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: looked-at\n    action: allow\n    hosts: [allowed.test]\n    ports: [${origin.port}]\n    inspect: true\n`),
    dnsServers: [`127.0.0.1:${dns.port}`],
    inspect: { caFile: join(dir, 'inspect-ca.pem'), caKeyFile: join(dir, 'inspect-ca-key.pem'), upstreamCaFiles: [join(dir, 'origin.pem')] },
  });
});

afterAll(async () => {
  await report?.close();
  await inspecting?.close();
  await origin?.close();
  await dns?.close();
});

/** CONNECT, then TLS with `servername` inside; resolves with the answer to GET / or rejects. */
function through(proxyPort: number, servername: string, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: Socket = netConnect(proxyPort, '127.0.0.1');
    s.on('error', reject);
    s.write(`CONNECT allowed.test:${origin.port} HTTP/1.1\r\nHost: allowed.test:${origin.port}\r\n\r\n`);
    let head = '';
    const onHead = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onHead);
      if (!head.startsWith('HTTP/1.1 200')) return reject(new Error(head));
      const t = tlsConnect({ socket: s, servername, ca, checkServerIdentity: () => undefined });
      let body = '';
      t.on('secureConnect', () => t.write(`GET / HTTP/1.1\r\nHost: allowed.test:${origin.port}\r\nConnection: close\r\n\r\n`));
      t.on('data', (c) => (body += c));
      t.on('end', () => resolve(body));
      t.on('close', () => resolve(body));
      t.on('error', reject);
    };
    s.on('data', onHead);
  });
}

describe('tunnel content check: report mode and inspected tunnels', () => {
  it('report mode records sni_mismatch as a would-be deny and relays the tunnel', async () => {
    const n = report.sink.records.length;
    expect(await through(report.port, 'other.test', testCert().cert)).toMatch(/hello$/);
    const rec = await report.sink.waitFor((r) => report.sink.records.indexOf(r) >= n && r.reason === 'sni_mismatch' && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'deny', mode: 'report', detail: { sni: 'other.test' } });
  });

  it('an inspected tunnel whose ClientHello names another server is refused sni_mismatch; the matching name works', async () => {
    const ca = readFileSync(join(dir, 'inspect-ca.pem'));
    let n = inspecting.sink.records.length;
    expect(await through(inspecting.port, 'other.test', ca)).toBe('');
    const rec = await inspecting.sink.waitFor((r) => inspecting.sink.records.indexOf(r) >= n && r.method === 'CONNECT');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'sni_mismatch', inspected: true, detail: { sni: 'other.test', tunnelRule: 'looked-at' } });
    expect(inspecting.sink.records.slice(n).some((r) => r.parent === rec.id)).toBe(false);
    n = inspecting.sink.records.length;
    expect(await through(inspecting.port, 'allowed.test', ca)).toMatch(/hello$/);
    expect(await inspecting.sink.waitFor((r) => inspecting.sink.records.indexOf(r) >= n && r.method === 'GET')).toMatchObject({ verdict: 'allow' });
  });
});
