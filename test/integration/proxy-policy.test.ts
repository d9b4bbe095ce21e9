import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw, rawExchange } from '../helpers/raw.js';

let dns: TestDnsServer;
let origin: Origin;
const dir = mkdtempSync(join(tmpdir(), 'ae-policy-'));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const basic = (u: string, p: string) => `Proxy-Authorization: Basic ${Buffer.from(`${u}:${p}`).toString('base64')}\r\n`;

beforeAll(async () => {
  dns = await startTestDnsServer({ 'api.test': { A: ['127.0.0.1'] }, 'docs.test': { A: ['127.0.0.1'] }, 'other.test': { A: ['127.0.0.1'] } });
  origin = await startHttpOrigin();
});
afterAll(async () => {
  await origin?.close();
  await dns?.close();
});

function policyFile(name: string, yaml: string): string {
  const f = join(dir, name);
  writeFileSync(f, yaml);
  return f;
}

describe('agents, credentials and 407', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    process.env.AE_TEST_TOKEN = 'env-token-123';
    const file = policyFile(
      'agents.yaml',
      `version: 1
require_auth: true
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: shared-docs
    action: allow
    hosts: [docs.test]
    ports: [${origin.port}]
agents:
  - name: coder
    token_sha256: "${sha('s3cret')}"
    rules:
      - name: coder-api
        action: allow
        hosts: [api.test]
        ports: [${origin.port}]
  - name: ci
    token_env: AE_TEST_TOKEN
    shared_rules: false
    rules:
      - name: ci-other
        action: allow
        hosts: [other.test]
        ports: [${origin.port}]
`,
    );
    proxy = await startTestProxy({ policyFile: file, dnsServers: [`127.0.0.1:${dns.port}`] });
  });
  afterAll(() => proxy?.close());

  it('no credentials when the policy requires them: 407 with Proxy-Authenticate', async () => {
    const res = await rawExchange(proxy.port, `CONNECT docs.test:${origin.port} HTTP/1.1\r\nHost: docs.test:${origin.port}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 407 /);
    expect(res).toMatch(/Proxy-Authenticate: Basic realm="agent-egress"/);
  });

  it('wrong password and unknown agent: 407, and the credentials are never echoed or recorded', async () => {
    for (const [u, p] of [['coder', 'wrong-pass'], ['nobody', 's3cret']]) {
      const res = await rawExchange(proxy.port, `GET http://docs.test:${origin.port}/ HTTP/1.1\r\nHost: docs.test\r\n${basic(u, p)}Connection: close\r\n\r\n`);
      expect(res).toMatch(/^HTTP\/1\.1 407 /);
      expect(res).not.toContain(p);
    }
    expect(JSON.stringify(proxy.sink.records)).not.toMatch(/wrong-pass|s3cret/);
  });

  it('an agent gets its own rules on top of the shared ones; the record names it', async () => {
    const api = await rawExchange(proxy.port, `CONNECT api.test:${origin.port} HTTP/1.1\r\nHost: api.test:${origin.port}\r\n${basic('coder', 's3cret')}\r\n`, 300);
    expect(api).toMatch(/^HTTP\/1\.1 200 /);
    const docs = await rawExchange(proxy.port, `CONNECT docs.test:${origin.port} HTTP/1.1\r\nHost: docs.test:${origin.port}\r\n${basic('coder', 's3cret')}\r\n`, 300);
    expect(docs).toMatch(/^HTTP\/1\.1 200 /);
    const rec = await proxy.sink.waitFor((r) => r.agent === 'coder' && r.host === 'api.test');
    expect(rec.rule).toBe('coder-api');
  });

  it("one agent's rules do not apply to another; shared_rules: false drops the shared ones", async () => {
    const ciApi = await rawExchange(proxy.port, `CONNECT api.test:${origin.port} HTTP/1.1\r\nHost: api.test:${origin.port}\r\n${basic('ci', 'env-token-123')}\r\n`);
    expect(ciApi).toMatch(/^HTTP\/1\.1 403 /);
    const ciDocs = await rawExchange(proxy.port, `CONNECT docs.test:${origin.port} HTTP/1.1\r\nHost: docs.test:${origin.port}\r\n${basic('ci', 'env-token-123')}\r\n`);
    expect(ciDocs).toMatch(/^HTTP\/1\.1 403 /);
    const ciOther = await rawExchange(proxy.port, `CONNECT other.test:${origin.port} HTTP/1.1\r\nHost: other.test:${origin.port}\r\n${basic('ci', 'env-token-123')}\r\n`, 300);
    expect(ciOther).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('report mode and methods', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    const file = policyFile(
      'report.yaml',
      `version: 1
mode: report
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: api-read-only
    action: allow
    hosts: [api.test]
    ports: [${origin.port}]
    methods: [GET]
`,
    );
    proxy = await startTestProxy({ policyFile: file, dnsServers: [`127.0.0.1:${dns.port}`] });
  });
  afterAll(() => proxy?.close());

  it('report mode forwards what it would deny and records verdict deny, mode report', async () => {
    const res = await rawExchange(proxy.port, `GET http://other.test:${origin.port}/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    const rec = await proxy.sink.waitFor((r) => r.host === 'other.test');
    expect(rec).toMatchObject({ verdict: 'deny', mode: 'report', reason: 'no_rule', status: 200 });
  });

  it('report mode never opens the address guard', async () => {
    dns.set('private.test', { A: ['10.1.1.1'] });
    const res = await rawExchange(proxy.port, `CONNECT private.test:${origin.port} HTTP/1.1\r\nHost: private.test:${origin.port}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    expect(res).toMatch(/private_address/);
  });

  it('methods: a rule for GET records a POST as method_not_allowed', async () => {
    const res = await rawExchange(proxy.port, `POST http://api.test:${origin.port}/ HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    const rec = await proxy.sink.waitFor((r) => r.method === 'POST' && r.host === 'api.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', mode: 'report' });
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('live policy reload', () => {
  it('a good edit takes effect for new requests, a bad edit keeps the running policy, open tunnels survive both', async () => {
    const allow = (host: string) => `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: only-${host.split('.')[0]}
    action: allow
    hosts: [${host}]
    ports: [${origin.port}]
`;
    const file = policyFile('reload.yaml', allow('api.test'));
    const proxy = await startTestProxy({ policyFile: file, dnsServers: [`127.0.0.1:${dns.port}`] });
    try {
      const first = proxy.egress.holder.current().hash;
      const tunnel = await openRaw(proxy.port);
      tunnel.socket.write(`CONNECT api.test:${origin.port} HTTP/1.1\r\nHost: api.test:${origin.port}\r\n\r\n`);
      expect(await tunnel.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);

      writeFileSync(file, allow('docs.test'));
      const ok = await proxy.egress.holder.reload('api');
      expect(ok.ok).toBe(true);
      expect(proxy.egress.holder.current().hash).not.toBe(first);
      expect(await rawExchange(proxy.port, `CONNECT api.test:${origin.port} HTTP/1.1\r\nHost: api.test:${origin.port}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 /);
      expect(await rawExchange(proxy.port, `CONNECT docs.test:${origin.port} HTTP/1.1\r\nHost: docs.test:${origin.port}\r\n\r\n`, 300)).toMatch(/^HTTP\/1\.1 200 /);

      const good = proxy.egress.holder.current().hash;
      writeFileSync(file, 'version: 1\nrules:\n  - name: broken\n    action: allow\n    hosts: ["bad host"]\n');
      const bad = await proxy.egress.holder.reload('signal');
      expect(bad.ok).toBe(false);
      if (!bad.ok) expect(bad.error).toMatch(/reload\.yaml:5/);
      expect(proxy.egress.holder.current().hash).toBe(good);
      expect(proxy.egress.holder.state()).toMatchObject({ reloadFailures: 1 });
      expect(await rawExchange(proxy.port, `CONNECT docs.test:${origin.port} HTTP/1.1\r\nHost: docs.test:${origin.port}\r\n\r\n`, 300)).toMatch(/^HTTP\/1\.1 200 /);

      // The tunnel opened under the first policy still carries traffic.
      tunnel.socket.write(`GET / HTTP/1.1\r\nHost: api.test\r\n\r\n`);
      expect(await tunnel.read('hello')).toContain('hello');
      tunnel.socket.destroy();
      const rec = await proxy.sink.waitFor((r) => r.host === 'docs.test' && r.verdict === 'allow');
      expect(rec.policyHash).toBe(good);
    } finally {
      await proxy.close();
    }
  });

  it('the file watch picks up an edit without a signal', async () => {
    const file = policyFile('watch.yaml', `version: 1\nrules:\n  - name: a\n    action: allow\n    hosts: [api.test]\n`);
    const proxy = await startTestProxy({ policyFile: file, watchMs: 100 });
    try {
      const before = proxy.egress.holder.current().hash;
      writeFileSync(file, `version: 1\nrules:\n  - name: b\n    action: allow\n    hosts: [docs.test]\n    ports: [443, 8443]\n`);
      const end = Date.now() + 5_000;
      while (proxy.egress.holder.current().hash === before && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(proxy.egress.holder.current().hash).not.toBe(before);
      expect(proxy.egress.holder.state().reloads).toBe(1);
    } finally {
      await proxy.close();
    }
  });
});
