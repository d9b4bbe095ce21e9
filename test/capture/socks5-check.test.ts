import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { connectVia, requestDomain, requestIpv4 } from './socks-helpers.js';

/** `check host:port` must answer what the SOCKS5 listener does: same verdict, reason and rule. */
const run = promisify(execFile);
const BIN = join(resolve(__dirname, '../..'), 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-socks-check-'));

let dns: TestDnsServer;
let origin: Origin;
let proxy: TestProxy;
let policy: string;
let socksPort: number;

beforeAll(async () => {
  dns = await startTestDnsServer({
    'ro.test': { A: ['127.0.0.1'] },
    'open.test': { A: ['127.0.0.1'] },
    'private.test': { A: ['10.0.0.5'] },
    'nothing.test': { A: ['127.0.0.1'] },
    'pinned.test': { A: ['127.0.0.1'] },
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
  - {name: bad, action: deny, hosts: [denied.test]}
  - {name: private, action: allow, hosts: [private.test], ports: [${p}]}
  - {name: pinned, action: allow, hosts: [pinned.test], cidrs: [192.0.2.0/24], ports: [${p}]}
  - {name: loop, action: allow, cidrs: [127.0.0.1/32], ports: [${p}]}
`,
  );
  proxy = await startTestProxy({ policyFile: policy, flags: { allow: [], deny: [], allowAddress: [] }, dnsServers: [`127.0.0.1:${dns.port}`], socks: { listen: '127.0.0.1:0' } });
  socksPort = proxy.egress.socks!.address.port;
});
afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await dns?.close();
});

const rows = ['ro.test:PORT', 'open.test:PORT', 'open.test:1', 'denied.test:PORT', 'nothing.test:PORT', 'private.test:PORT', 'pinned.test:PORT', '127.0.0.1:PORT', '127.0.0.1:1'];

describe('check agrees with the SOCKS5 listener', () => {
  it('covers allow, every deny reason and an IP literal', () => expect(rows.length).toBe(9));

  it.each(rows)('%s', async (pattern) => {
    const target = pattern.replace('PORT', String(origin.port));
    const r = await run('node', [BIN, 'check', '--json', '--resolve', '--dns-server', `127.0.0.1:${dns.port}`, '--policy', policy, target], { encoding: 'utf8', env: { ...process.env, AGENT_EGRESS_POLICY: '' } }).catch(
      (e: { stdout: string }) => e,
    );
    const answer = JSON.parse(r.stdout);
    const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
    const n = proxy.sink.records.length;
    const { c, code } = await connectVia(socksPort, /^\d/.test(host) ? requestIpv4(host, port) : requestDomain(host, port));
    c.destroy();
    const rec = await proxy.sink.waitFor((x) => proxy.sink.records.indexOf(x) >= n && x.method === 'SOCKS5');
    expect({ verdict: answer.verdict, reason: answer.reason, rule: answer.rule }).toEqual({ verdict: rec.verdict, reason: rec.reason, rule: rec.rule });
    expect(code === 0).toBe(rec.verdict === 'allow');
  });
});
