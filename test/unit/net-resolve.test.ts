import { promises as dnsp } from 'node:dns';
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createResolver, ResolveError } from '../../src/net/resolve.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';

let dns: TestDnsServer;

beforeAll(async () => {
  dns = await startTestDnsServer({
    'both.test': { A: ['192.0.2.10', '192.0.2.11'], AAAA: ['2001:db8::10', '2001:DB8:0:0::10'] },
    'v4only.test': { A: ['198.51.100.1'] },
    'v6only.test': { AAAA: ['2001:db8::1'] },
    'empty.test': { TXT: ['hello'] },
    'alias.test': { CNAME: 'both.test' },
    'Dangling.test': { CNAME: 'nowhere.test' },
    'dup.test': { A: ['203.0.113.5', '203.0.113.5'] },
  });
});
afterAll(async () => {
  await dns.close();
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ResolveError);
    return (err as ResolveError).code;
  }
  throw new Error('expected the resolution to fail');
}

describe('test DNS server (checked with node:dns)', () => {
  it('answers A, AAAA, TXT, CNAME chains, NXDOMAIN and empty NOERROR over UDP', async () => {
    const r = new dnsp.Resolver({ timeout: 2000, tries: 1 });
    r.setServers([`127.0.0.1:${dns.port}`]);
    expect(await r.resolve4('both.test')).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(await r.resolve6('BOTH.test')).toEqual(['2001:db8::10', '2001:db8::10']);
    expect(await r.resolveTxt('empty.test')).toEqual([['hello']]);
    expect(await r.resolve4('alias.test')).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(await r.resolveCname('alias.test')).toEqual(['both.test']);
    await expect(r.resolve4('missing.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(r.resolve4('empty.test')).rejects.toMatchObject({ code: 'ENODATA' });
    // A CNAME whose target is unknown: the answer holds only the CNAME, which c-ares reports as no addresses.
    expect(await r.resolve4('dangling.test')).toEqual([]);
    const seen = dns.queries.filter((q) => q.name === 'both.test').map((q) => `${q.type}/${q.transport}`);
    expect(seen).toEqual(['A/udp', 'AAAA/udp']);
  });

  it('answers over TCP with length framing, several queries on one connection', async () => {
    const net = await import('node:net');
    const dnsPacket = (await import('dns-packet')).default;
    const sock = net.connect(dns.port, '127.0.0.1');
    const frames: Buffer[] = [];
    let buf = Buffer.alloc(0);
    const done = new Promise<void>((resolve, reject) => {
      sock.on('error', reject);
      sock.on('data', (c) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          frames.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
          if (frames.length === 2) resolve();
        }
      });
    });
    const q1 = dnsPacket.streamEncode({ id: 1, type: 'query', questions: [{ type: 'A', name: 'v4only.test' }] });
    const q2 = dnsPacket.streamEncode({ id: 2, type: 'query', questions: [{ type: 'AAAA', name: 'missing.test' }] });
    sock.write(Buffer.concat([q1, q2]));
    await done;
    sock.destroy();
    const [r1, r2] = frames.map((f) => dnsPacket.decode(f));
    expect(r1.id).toBe(1);
    expect(r1.answers?.map((a) => a.data)).toEqual(['198.51.100.1']);
    expect(r2.id).toBe(2);
    expect(r2.rcode).toBe('NXDOMAIN');
    expect(dns.queries.some((q) => q.name === 'missing.test' && q.transport === 'tcp')).toBe(true);
  });
});

describe('createResolver with servers', () => {
  const make = (timeoutMs = 2000) => createResolver({ servers: [`127.0.0.1:${dns.port}`], timeoutMs });

  it('returns A then AAAA, canonical and deduplicated', async () => {
    expect(await make().resolve('both.test')).toEqual(['192.0.2.10', '192.0.2.11', '2001:db8::10']);
    expect(await make().resolve('dup.test')).toEqual(['203.0.113.5']);
  });

  it('accepts one family missing (ENODATA)', async () => {
    expect(await make().resolve('v4only.test')).toEqual(['198.51.100.1']);
    expect(await make().resolve('v6only.test')).toEqual(['2001:db8::1']);
  });

  it('follows CNAMEs', async () => {
    expect(await make().resolve('alias.test')).toEqual(['192.0.2.10', '192.0.2.11', '2001:db8::10']);
  });

  it('reports not_found for NXDOMAIN, no records, and a dangling CNAME; never an empty list', async () => {
    expect(await codeOf(make().resolve('missing.test'))).toBe('not_found');
    expect(await codeOf(make().resolve('empty.test'))).toBe('not_found');
    expect(await codeOf(make().resolve('dangling.test'))).toBe('not_found');
  });

  it('times out when the server answers after the deadline', async () => {
    dns.set('slow.test', { A: ['192.0.2.99'] });
    dns.setDelay('slow.test', 3000);
    expect(await codeOf(make(300).resolve('slow.test'))).toBe('timeout');
  });

  it('a slow name does not fail a concurrent fast one', async () => {
    dns.set('slow2.test', { A: ['192.0.2.98'] });
    dns.setDelay('slow2.test', 3000);
    const r = make(500);
    const [slow, fast] = await Promise.allSettled([r.resolve('slow2.test'), r.resolve('v4only.test')]);
    expect(slow.status).toBe('rejected');
    expect(fast).toEqual({ status: 'fulfilled', value: ['198.51.100.1'] });
  });

  it('fails (timeout or failure) when the server is down', async () => {
    const spare = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => spare.bind(0, '127.0.0.1', () => resolve()));
    const port = spare.address().port;
    await new Promise<void>((resolve) => spare.close(() => resolve()));
    const r = createResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 500 });
    expect(['timeout', 'failure']).toContain(await codeOf(r.resolve('both.test')));
  });

  it('returns IP literals as themselves, canonical, without a query', async () => {
    const before = dns.queries.length;
    expect(await make().resolve('2001:DB8::0:1')).toEqual(['2001:db8::1']);
    expect(await make().resolve('192.0.2.1')).toEqual(['192.0.2.1']);
    expect(dns.queries.length).toBe(before);
  });

  it('does not cache', async () => {
    dns.set('changing.test', { A: ['192.0.2.1'] });
    const r = make();
    expect(await r.resolve('changing.test')).toEqual(['192.0.2.1']);
    dns.set('changing.test', { A: ['192.0.2.2'] });
    expect(await r.resolve('changing.test')).toEqual(['192.0.2.2']);
  });

  it('rejects malformed server lists and timeouts at creation', () => {
    expect(() => createResolver({ servers: ['not an address'] })).toThrow();
    expect(() => createResolver({ timeoutMs: 0 })).toThrow();
  });

  it('rejects an empty name', async () => {
    expect(await codeOf(make().resolve(''))).toBe('failure');
  });
});

describe('createResolver without servers (system resolver)', () => {
  it('resolves localhost from /etc/hosts', async () => {
    const addrs = await createResolver({ timeoutMs: 3000 }).resolve('localhost');
    expect(addrs.length).toBeGreaterThan(0);
    expect(addrs.every((a) => a === '::1' || a.startsWith('127.'))).toBe(true);
  });

  it('fails for a name under .invalid', async () => {
    const code = await codeOf(createResolver({ timeoutMs: 3000 }).resolve('no-such-host.invalid'));
    expect(['not_found', 'timeout', 'failure']).toContain(code);
  });
});
