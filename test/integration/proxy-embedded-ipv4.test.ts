import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';

// Issue 9 item 3 through the real proxy: a deny CIDR 8.8.8.0/24 refuses the IPv6 forms that embed
// 8.8.8.x, as CONNECT literals and as names resolving to them. Every case is refused before any dial.
let dns: TestDnsServer;
let proxy: TestProxy;

const NAMES: Record<string, string> = {
  'nat64.test': '64:ff9b::808:808',
  'sixtofour.test': '2002:808:808::1',
  'siit.test': '::ffff:0:808:808',
  'compat.test': '::808:808',
  'teredo.test': '2001:0:4136:e378:8000:63bf:f7f7:f7f7',
  'nat64local.test': '64:ff9b:1::808:808',
};

beforeAll(async () => {
  dns = await startTestDnsServer(Object.fromEntries(Object.entries(NAMES).map(([n, a]) => [n, { AAAA: [a] }])));
  proxy = await startTestProxy({
    flags: { allow: ['*.test', '0.0.0.0/0', '::/0'], deny: ['8.8.8.0/24'], allowAddress: [] },
    dnsServers: [`127.0.0.1:${dns.port}`],
  });
});

afterAll(async () => {
  await proxy?.close();
  await dns?.close();
});

const connect = (authority: string): Promise<string> =>
  rawExchange(proxy.port, `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);

describe('IPv4 deny CIDRs and IPv6 forms embedding IPv4, through the proxy', () => {
  it.each(Object.values(NAMES))('CONNECT [%s]:443 is refused by the deny rule', async (address) => {
    expect(await connect(`[${address}]:443`)).toMatch(/^HTTP\/1\.1 403 /);
    const rec = await proxy.sink.waitFor((r) => r.host === address);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'flag:deny:8.8.8.0/24' });
  });

  it.each(Object.entries(NAMES))('CONNECT %s:443 (resolving to %s) is refused after resolution', async (name, address) => {
    expect(await connect(`${name}:443`)).toMatch(/^HTTP\/1\.1 403 /);
    const rec = await proxy.sink.waitFor((r) => r.host === name);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'address_not_allowed' });
    expect((rec.detail?.refusedAddresses as { address: string }[]).map((r) => r.address)).toEqual([address]);
  });
});

describe('an allow pin (hosts + cidrs) is not bypassed by IPv6 forms of other IPv4 hosts', () => {
  let pinDns: TestDnsServer;
  let pinProxy: TestProxy;
  let dir: string;
  // Each name resolves to a form embedding an IPv4 outside the pin 127.0.0.1/32 (or an ambiguous one
  // whose client is 127.0.0.1): all are refused after resolution, none is dialled.
  const PINNED: Record<string, string> = {
    'nat64.pin.test': '64:ff9b::a00:1',
    'sixtofour.pin.test': '2002:a00:1::1',
    'siit.pin.test': '::ffff:0:a00:1',
    'teredo.pin.test': '2001:0:4136:e378:8000:63bf:80ff:fffe',
    'local.pin.test': '64:ff9b:1::7f00:1',
  };
  beforeAll(async () => {
    pinDns = await startTestDnsServer(Object.fromEntries(Object.entries(PINNED).map(([n, a]) => [n, { AAAA: [a] }])));
    dir = mkdtempSync(join(tmpdir(), 'embedded-pin-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\nrules:\n  - {name: pin, action: allow, hosts: ["*.pin.test"], cidrs: [127.0.0.1/32]}\n');
    pinProxy = await startTestProxy({ policyFile: file, dnsServers: [`127.0.0.1:${pinDns.port}`] });
  });
  afterAll(async () => {
    await pinProxy?.close();
    await pinDns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(Object.entries(PINNED))('CONNECT %s:443 (resolving to %s) is refused by the pin', async (name, address) => {
    const res = await rawExchange(pinProxy.port, `CONNECT ${name}:443 HTTP/1.1\r\nHost: ${name}:443\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 403 /);
    const rec = await pinProxy.sink.waitFor((r) => r.host === name);
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'address_not_allowed', rule: 'pin' });
    expect(rec.detail?.refusedAddresses).toEqual([{ address, why: 'rule_cidr' }]);
  });
});
