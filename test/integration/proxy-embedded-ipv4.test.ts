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
