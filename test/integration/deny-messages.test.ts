import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsFilter } from '../../src/dns/index.js';
import { AddressGuard } from '../../src/net/guard.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { dig, MemorySink as DnsSink } from '../dns/client.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { parseHead } from '../helpers/proxy-status.js';
import { rawExchange } from '../helpers/raw.js';
import { basicAuth as auth, connectRequest as connect, freedPort, getRequest as get, silentUdp } from '../helpers/requests.js';

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let closedPort: number;
const dir = mkdtempSync(join(tmpdir(), 'ae-deny-msg-'));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

beforeAll(async () => {
  dns = await startTestDnsServer({
    'web.test': { A: ['127.0.0.1'] },
    'app.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.7'] },
    'blocked.test': { A: ['127.0.0.1'] },
  });
  origin = await startHttpOrigin();
  closedPort = await freedPort();
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: web-https
    action: allow
    hosts: [web.test]
  - name: app
    action: allow
    hosts: [app.test, private.test, nowhere.test]
    ports: [${origin.port}, ${closedPort}, "9000-9010"]
  - name: no-blocked
    action: deny
    hosts: [blocked.test, gone.test]
agents:
  - name: trial
    mode: report
    token_sha256: "${sha('pw')}"
`,
  );
  proxy = await startTestProxy({ policyFile: policy, dnsServers: [`127.0.0.1:${dns.port}`] });
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await dns?.close();
});


async function exchange(request: string) {
  const res = parseHead(await rawExchange(proxy.port, request));
  const id = res.headers.get('x-agent-egress-decision')?.[0];
  expect(id).toBeTruthy();
  const rec = await proxy.sink.waitFor((r) => r.id === id);
  return { ...res, rec };
}

describe('no_rule says where the host is allowed', () => {
  it('CONNECT to a port the host is not allowed on names the allowed port, in the body, Proxy-Status and record', async () => {
    const { status, body, headers, rec } = await exchange(connect('web.test:8443'));
    expect(status).toBe(403);
    expect(body).toContain('web.test is allowed on port 443 only');
    expect(headers.get('proxy-status')?.[0]).toContain('web.test is allowed on port 443 only');
    expect(rec).toMatchObject({ reason: 'no_rule', rule: null, detail: { hint: 'web.test is allowed on port 443 only', allowedPorts: ['443'] } });
  });

  it('plain HTTP lists every allowed port and range, in text and in JSON', async () => {
    const { body, rec } = await exchange(get('http://app.test:8080/'));
    const items = ([[origin.port, String(origin.port)], [closedPort, String(closedPort)], [9000, '9000-9010']] as const)
      .slice()
      .sort((a, b) => a[0] - b[0])
      .map(([, text]) => text);
    const want = `app.test is allowed on ports ${items[0]}, ${items[1]} and ${items[2]} only`;
    expect(body).toContain(want);
    expect(rec.detail?.allowedPorts).toEqual(items);
    const json = parseHead(await rawExchange(proxy.port, get('http://app.test:8080/', 'Accept: application/json\r\n')));
    expect(JSON.parse(json.body).error).toContain(want);
  });

  it('a host no rule allows on any port gets no hint', async () => {
    const { body, rec } = await exchange(connect('pastebin.com:443'));
    expect(body).toMatch(/no rule of the policy allows this destination \(reason no_rule/);
    expect(rec.detail?.hint).toBeUndefined();
    expect(rec.detail?.allowedPorts).toBeUndefined();
  });

  it('a deny rule refusal gets no port hint', async () => {
    const { rec } = await exchange(connect('blocked.test:443'));
    expect(rec).toMatchObject({ reason: 'rule_deny', rule: 'no-blocked' });
    expect(rec.detail?.hint).toBeUndefined();
  });
});

describe('DNS and upstream failures read as errors, not as policy denials', () => {
  it('dns_failure names no rule; the allowing rule is kept as the policy decision', async () => {
    const { status, body, rec } = await exchange(connect(`nowhere.test:${origin.port}`));
    expect(status).toBe(502);
    expect(body).toMatch(/^agent-egress could not reach nowhere\.test:\d+: /);
    expect(body).not.toContain('rule app');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'dns_failure', rule: null, detail: { policy: { verdict: 'allow', reason: 'rule_allow', rule: 'app' } } });
    expect(typeof rec.detail?.error).toBe('string');
  });

  it('plain HTTP dns_failure likewise', async () => {
    const { body, rec } = await exchange(get(`http://nowhere.test:${origin.port}/`));
    expect(body).toMatch(/^agent-egress could not reach GET nowhere\.test:\d+: nowhere\.test does not resolve/);
    expect(rec).toMatchObject({ reason: 'dns_failure', rule: null, detail: { policy: { verdict: 'allow', rule: 'app' } } });
  });

  it('an upstream refusing the connection is an error of an allowed request', async () => {
    const { status, body, rec } = await exchange(connect(`app.test:${closedPort}`));
    expect(status).toBe(502);
    expect(body).toMatch(/^agent-egress could not reach app\.test:\d+: the destination refused or reset the connection/);
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'upstream_error', rule: 'app', detail: { policy: { verdict: 'allow', reason: 'rule_allow', rule: 'app' } } });
  });

  it('an address guard refusal after an allow names no rule either', async () => {
    const { body, rec } = await exchange(connect(`private.test:${origin.port}`));
    expect(body).toMatch(/^agent-egress refused private\.test:\d+: /);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'private_address', rule: null, detail: { policy: { verdict: 'allow', rule: 'app' } } });
  });

  it('a policy refusal carries no separate policy decision (it is the record itself)', async () => {
    const { rec } = await exchange(connect('blocked.test:443'));
    expect(rec.detail?.policy).toBeUndefined();
  });
});

describe('report mode keeps the rule that would have denied', () => {
  const trial = auth('trial', 'pw');

  it('forwarded: the deny rule and its reason', async () => {
    const { status, rec } = await exchange(get(`http://blocked.test:${origin.port}/`, trial));
    expect(status).toBe(200);
    expect(rec).toMatchObject({ agent: 'trial', verdict: 'deny', mode: 'report', reason: 'rule_deny', rule: 'no-blocked' });
  });

  it('and when the lookup then fails: still the deny rule, with the reason it would have been denied for', async () => {
    const { status, rec } = await exchange(connect(`gone.test:${origin.port}`, trial));
    expect(status).toBe(502);
    expect(rec).toMatchObject({
      verdict: 'deny',
      mode: 'report',
      reason: 'dns_failure',
      rule: 'no-blocked',
      detail: { policy: { verdict: 'deny', reason: 'rule_deny', rule: 'no-blocked' } },
    });
  });

  it('and when the upstream fails after a would-be no_rule: the reason and the hint are kept', async () => {
    const { rec } = await exchange(connect(`web.test:${closedPort}`, trial));
    expect(rec).toMatchObject({
      verdict: 'deny',
      mode: 'report',
      reason: 'upstream_error',
      rule: null,
      detail: { policy: { verdict: 'deny', reason: 'no_rule', rule: null }, hint: 'web.test is allowed on port 443 only' },
    });
  });
});

describe('the DNS filter records failures the same way', () => {
  it('a SERVFAIL after an allow names no rule and keeps the allowing rule as the policy decision', async () => {
    const silent = await silentUdp();
    const sink = new DnsSink();
    const policy = compilePolicy(parsePolicyText('version: 1\nrules:\n  - {name: example, action: allow, hosts: [api.example.com]}\n', 't.yaml'));
    const guard = new AddressGuard({});
    const f = await startDnsFilter({
      listen: '127.0.0.1:0',
      upstreams: [`127.0.0.1:${silent.port}`],
      policy: () => policy,
      guard: () => guard,
      sink,
      upstreamTimeoutMs: 300,
    });
    try {
      expect((await dig(f.port, 'api.example.com')).status).toBe('SERVFAIL');
      expect(sink.records[0]).toMatchObject({
        verdict: 'deny',
        reason: 'dns_failure',
        rule: null,
        detail: { policy: { verdict: 'allow', reason: 'rule_allow', rule: 'example' } },
      });
    } finally {
      await f.close();
      silent.close();
    }
  });
});
