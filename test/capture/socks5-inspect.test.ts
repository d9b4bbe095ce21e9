import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInspectionCa } from '../../src/inspect/ca.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ae-socks-inspect-'));

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let socks: string;

beforeAll(async () => {
  dns = await startTestDnsServer({ 'allowed.test': { A: ['127.0.0.1'] } });
  origin = await startHttpsOrigin();
  await createInspectionCa(dir, { days: 2, force: false });
  writeFileSync(join(dir, 'origin-ca.pem'), testCert().cert);
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: echo-only
    action: allow
    hosts: [allowed.test]
    ports: [${origin.port}]
    inspect: true
    paths: [/echo]
`,
  );
  proxy = await startTestProxy({
    policyFile: policy,
    flags: { allow: [], deny: [], allowAddress: [] },
    dnsServers: [`127.0.0.1:${dns.port}`],
    inspect: { caFile: join(dir, 'inspect-ca.pem'), caKeyFile: join(dir, 'inspect-ca-key.pem'), upstreamCaFiles: [join(dir, 'origin-ca.pem')] },
    socks: { listen: '127.0.0.1:0' },
  });
  socks = `127.0.0.1:${proxy.egress.socks!.address.port}`;
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await dns?.close();
});

const curl = (path: string) =>
  run('curl', ['-sS', '--max-time', '10', '-o', '-', '-w', '\n%{http_code}', '--cacert', join(dir, 'inspect-ca.pem'), '--socks5-hostname', socks, `https://allowed.test:${origin.port}${path}`]).then((r) => r.stdout);

describe('a rule with inspect: true, reached over SOCKS5', () => {
  it('is inspected as over CONNECT: each request inside is decided on its own and recorded under the tunnel', async () => {
    const ok = await curl('/echo');
    expect(ok).toMatch(/"url":"\/echo"[\s\S]*\n200$/);
    const refused = await curl('/elsewhere');
    expect(refused).toMatch(/\n403$/);
    const tunnel = await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.inspected === true);
    expect(tunnel).toMatchObject({ host: 'allowed.test', rule: 'echo-only', status: 200, address: '127.0.0.1' });
    const inner = await proxy.sink.waitFor((r) => r.method === 'GET' && r.path === '/elsewhere');
    expect(inner).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed', status: 403 });
    expect(inner.parent).toBeDefined();
    expect(proxy.sink.records.filter((r) => r.method === 'SOCKS5').map((r) => r.id)).toContain(inner.parent);
    expect(origin.seen.map((s) => s.url)).toEqual(['/echo']);
  });
});
