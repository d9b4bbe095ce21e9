import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';
import { parseConnectTarget } from '../../src/net/target.js';
import { connectVia, requestDomain, requestIpv4 } from '../capture/socks-helpers.js';

/**
 * `check` must answer exactly what the proxy does: every row is asked of `check` (the built CLI) and
 * sent through the real running proxy (tunnels through both CONNECT and SOCKS5), and the verdict,
 * reason and rule must agree.
 */
const run = promisify(execFile);
const BIN = join(resolve(__dirname, '../..'), 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-check-'));

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run('node', [BIN, ...args], { encoding: 'utf8', env: { ...process.env, AGENT_EGRESS_POLICY: '', ...env }, timeout: 20_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let policy: string;

beforeAll(async () => {
  dns = await startTestDnsServer({
    'ro.test': { A: ['127.0.0.1'] },
    'open.test': { A: ['127.0.0.1'] },
    'post.test': { A: ['127.0.0.1'] },
    'agent.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.5'] },
    'nothing.test': { A: ['127.0.0.1'] },
  });
  origin = await startHttpOrigin();
  const p = origin.port;
  policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - {name: ro, action: allow, hosts: [ro.test], ports: [${p}], methods: [GET, HEAD]}
  - {name: open, action: allow, hosts: [open.test], ports: [${p}]}
  - {name: post-host, action: allow, hosts: [post.test], ports: [${p}]}
  - {name: no-post, action: deny, hosts: [post.test], methods: [POST]}
  - {name: bad, action: deny, hosts: [denied.test]}
  - {name: private, action: allow, hosts: [private.test], ports: [${p}]}
  - {name: loop, action: allow, cidrs: [127.0.0.1/32], ports: [${p}], methods: [GET]}
agents:
  - name: reader
    token_sha256: "${'0'.repeat(64)}"
    rules:
      - {name: reader-ro, action: allow, hosts: [agent.test], ports: [${p}], methods: [GET]}
`,
  );
  proxy = await startTestProxy({ policyFile: policy, dnsServers: [`127.0.0.1:${dns.port}`], socks: { listen: '127.0.0.1:0' } });
});
afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await dns?.close();
});

// target (PORT is the origin's), --method (or none)
const rows: [string, string | null][] = [
  ['http://ro.test:PORT/', null],
  ['http://ro.test:PORT/', 'GET'],
  ['http://ro.test:PORT/', 'POST'],
  ['https://ro.test:PORT/', 'POST'],
  ['https://ro.test:PORT/', 'GET'],
  ['ro.test:PORT', null],
  ['http://open.test:PORT/x', 'DELETE'],
  ['https://open.test:PORT/', 'PUT'],
  ['open.test:PORT', null],
  ['http://open.test:1/', null],
  ['https://post.test:PORT/', 'GET'],
  ['http://post.test:PORT/', 'GET'],
  ['http://post.test:PORT/', 'POST'],
  ['https://denied.test:PORT/', null],
  ['http://denied.test:PORT/', null],
  ['http://nothing.test:PORT/', null],
  ['https://private.test:PORT/', null],
  ['http://private.test:PORT/', 'POST'],
  ['https://127.0.0.1:PORT/', null],
  ['http://127.0.0.1:PORT/', 'GET'],
];

describe('check agrees with the running proxy', () => {
  it('has a row for each class', () => expect(rows.length).toBe(20));

  it.each(rows)('%s --method %s', async (pattern, method) => {
    const target = pattern.replace('PORT', String(origin.port));
    const args = ['check', '--json', '--resolve', '--dns-server', `127.0.0.1:${dns.port}`, '--policy', policy, target];
    if (method) args.push('--method', method);
    const c = await cli(args);
    const answer = JSON.parse(c.stdout);

    const n = proxy.sink.records.length;
    let res: string;
    if (answer.via === 'connect') {
      res = await rawExchange(proxy.port, `CONNECT ${answer.target} HTTP/1.1\r\nHost: ${answer.target}\r\n\r\n`, 300);
    } else {
      const m = method ?? 'GET';
      res = await rawExchange(proxy.port, `${m} ${target} HTTP/1.1\r\nHost: ${answer.target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    }
    const rec = await proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= n);
    expect(rec.method).toBe(answer.method);
    expect({ verdict: answer.verdict, reason: answer.reason, rule: answer.rule }).toEqual({ verdict: rec.verdict, reason: rec.reason, rule: rec.rule });
    expect(c.code).toBe(rec.verdict === 'allow' ? 0 : 1);
    expect(res.startsWith('HTTP/1.1 200 ')).toBe(rec.verdict === 'allow');

    // A tunnel through the SOCKS5 listener is decided like the CONNECT: same verdict, reason and rule.
    if (answer.via === 'connect') {
      const m = proxy.sink.records.length;
      const { host, port } = parseConnectTarget(answer.target);
      const req = host.kind === 'ip' ? requestIpv4(host.value, port) : requestDomain(host.value, port);
      const { c, code } = await connectVia(proxy.egress.socks!.address.port, req);
      c.destroy();
      const viaSocks = await proxy.sink.waitFor((r) => proxy.sink.records.indexOf(r) >= m && r.method === 'SOCKS5');
      expect({ verdict: viaSocks.verdict, reason: viaSocks.reason, rule: viaSocks.rule }).toEqual({ verdict: answer.verdict, reason: answer.reason, rule: answer.rule });
      expect(code === 0).toBe(answer.verdict === 'allow');
    }
  });

  it('an agent: check --agent answers like the proxy does for that agent', async () => {
    const c = await cli(['check', '--json', '--policy', policy, '--agent', 'reader', `https://agent.test:${origin.port}/`]);
    expect(JSON.parse(c.stdout)).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'reader-ro', via: 'connect' });
    const g = await cli(['check', '--json', '--policy', policy, '--agent', 'reader', `http://agent.test:${origin.port}/`]);
    expect(JSON.parse(g.stdout)).toMatchObject({ verdict: 'allow', rule: 'reader-ro', via: 'http', method: 'GET' });
  });
});

describe('check without a policy, and bare hosts', () => {
  it('no --policy and no rules: exit 2 and says so, never a silent deny', async () => {
    const r = await cli(['check', 'api.openai.com:443']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no policy loaded');
    expect(r.stdout).toBe('');
  });

  it('AGENT_EGRESS_POLICY is the policy, as for serve', async () => {
    const r = await cli(['check', '--json', `https://ro.test:${origin.port}/`], { AGENT_EGRESS_POLICY: policy });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ reason: 'method_not_allowed', rule: 'ro' });
  });

  it.each([
    ['open.example', 'open.example:443', 'connect'],
    ['[2001:db8::1]', '[2001:db8::1]:443', 'connect'],
    ['http://open.example', 'open.example:80', 'http'],
    ['https://open.example', 'open.example:443', 'connect'],
    ['open.example:8443', 'open.example:8443', 'connect'],
  ])('a bare %s is %s', async (text, target, via) => {
    const r = await cli(['check', '--json', '--allow', 'open.example', '--allow', 'open.example:80', text]);
    expect(JSON.parse(r.stdout)).toMatchObject({ target, via });
  });
});
