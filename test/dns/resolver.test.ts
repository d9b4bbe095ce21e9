import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import * as packet from 'dns-packet';
import type { Answer } from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsFilter, type DnsFilterHandle } from '../../src/dns/index.js';
import { AddressGuard } from '../../src/net/guard.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { dig, MemorySink, rawUdp } from './client.js';
import { startTestUpstream, type TestUpstream } from './upstream-server.js';

const POLICY = `
version: 1
rules:
  - name: example
    action: allow
    hosts: ["example.com", "*.example.com"]
  - name: txt-ok
    action: allow
    hosts: ["txt.example.net"]
    dns_types: [TXT]
  - name: no-secret
    action: deny
    hosts: ["secret.example.com"]
`;

function policyOf(text: string): CompiledPolicy {
  return compilePolicy(parsePolicyText(text, 'test.yaml'));
}

const a = (name: string, data: string, ttl = 60): Answer => ({ type: 'A', name, ttl, data });
const cname = (name: string, data: string): Answer => ({ type: 'CNAME', name, ttl: 60, data });

const ZONE = {
  'api.example.com': [a('api.example.com', '93.184.216.34')],
  'secret.example.com': [a('secret.example.com', '93.184.216.40')],
  'elsewhere.test': [a('elsewhere.test', '93.184.216.41')],
  'mixed.example.com': [a('mixed.example.com', '10.0.0.5'), a('mixed.example.com', '93.184.216.35')],
  'private.example.com': [a('private.example.com', '10.0.0.6'), a('private.example.com', '169.254.169.254')],
  'alias.example.com': [cname('alias.example.com', 'leak.attacker.test')],
  'leak.attacker.test': [a('leak.attacker.test', '93.184.216.50')],
  'www.example.com': [cname('www.example.com', 'api.example.com')],
  'cached.example.com': [a('cached.example.com', '93.184.216.36', 300)],
  'txt.example.net': [{ type: 'TXT', name: 'txt.example.net', ttl: 60, data: 'hello' } as Answer],
  'txt.example.com': [{ type: 'TXT', name: 'txt.example.com', ttl: 60, data: 'nope' } as Answer],
  'big.example.com': Array.from({ length: 60 }, (_, i) => a('big.example.com', `93.184.217.${i + 1}`)),
  'tconly.example.com': [a('tconly.example.com', '93.184.216.37')],
};

let upstream: TestUpstream;
let filter: DnsFilterHandle;
const sink = new MemorySink();
let policy: CompiledPolicy;

const seenName = (name: string): boolean => upstream.seen.some((q) => q.name === name);

beforeAll(async () => {
  upstream = await startTestUpstream(ZONE, { truncateUdp: ['tconly.example.com'] });
  policy = policyOf(POLICY);
  const guard = new AddressGuard({});
  filter = await startDnsFilter({
    listen: '127.0.0.1:0',
    upstreams: [`127.0.0.1:${upstream.port}`],
    policy: () => policy,
    guard: () => guard,
    sink,
    // Generous enough for every test's queries from 127.0.0.1; the flood test uses its own address.
    rateLimit: { perSecond: 20, burst: 100 },
    upstreamTimeoutMs: 2000,
  });
});

afterAll(async () => {
  await filter?.close();
  await upstream?.close();
});

describe('filtering resolver', () => {
  it('resolves an allowed name through the upstream (dig and node dns.Resolver)', async () => {
    const r = await dig(filter.port, 'api.example.com');
    expect(r.status).toBe('NOERROR');
    expect(r.answers.map((x) => x.data)).toEqual(['93.184.216.34']);

    const resolver = new Resolver({ timeout: 3000, tries: 1 });
    resolver.setServers([`127.0.0.1:${filter.port}`]);
    expect(await resolver.resolve4('API.Example.COM')).toEqual(['93.184.216.34']);

    const rec = sink.forHost('api.example.com')[0];
    expect(rec).toMatchObject({ method: 'DNS', port: null, verdict: 'allow', reason: 'rule_allow', rule: 'example', status: 0 });
    expect(rec.detail).toMatchObject({ qtype: 'A' });
    expect(rec.address).toBe('93.184.216.34');
  });

  it('answers a denied name NXDOMAIN without asking the upstream', async () => {
    const r1 = await dig(filter.port, 'elsewhere.test');
    expect(r1.status).toBe('NXDOMAIN');
    const r2 = await dig(filter.port, 'secret.example.com');
    expect(r2.status).toBe('NXDOMAIN');
    expect(seenName('elsewhere.test')).toBe(false);
    expect(seenName('secret.example.com')).toBe(false);
    expect(sink.forHost('elsewhere.test')[0]).toMatchObject({ verdict: 'deny', reason: 'no_rule', status: 3 });
    expect(sink.forHost('secret.example.com')[0]).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'no-secret' });
  });

  it('never forwards an exfiltration-style random name', async () => {
    const secret = randomBytes(20).toString('hex');
    const name = `${secret}.${randomBytes(25).toString('hex')}.attacker.test`;
    const r = await dig(filter.port, name);
    expect(r.status).toBe('NXDOMAIN');
    expect(upstream.seen.some((q) => q.name.includes(secret))).toBe(false);
  });

  it('refuses over-long names without any upstream query', async () => {
    // 63+63+63+60 characters plus dots: 252 octets of labels under an allowed suffix is fine for the
    // wire format but the name exceeds 253 characters; dns-packet or our check must refuse it.
    const label = 'a'.repeat(63);
    const name = `${label}.${label}.${label}.${'b'.repeat(50)}.example.com`;
    const q = packet.encode({ type: 'query', id: 7, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
    const res = await rawUdp(filter.port, q);
    expect(res).not.toBeNull();
    const decoded = packet.decode(res!);
    expect(decoded.id).toBe(7);
    expect(['NXDOMAIN', 'FORMERR']).toContain((decoded as unknown as { rcode: string }).rcode);
    expect(upstream.seen.some((s) => s.name.startsWith('aaaa'))).toBe(false);
  });

  it('refuses TXT unless a rule lists it', async () => {
    const denied = await dig(filter.port, 'txt.example.com', 'TXT');
    expect(denied.status).toBe('REFUSED');
    expect(upstream.seen.some((q) => q.name === 'txt.example.com')).toBe(false);
    expect(sink.forHost('txt.example.com')[0]).toMatchObject({ verdict: 'deny', reason: 'qtype_refused', status: 5 });
    const any = await dig(filter.port, 'api.example.com', 'ANY');
    expect(any.status).toBe('REFUSED');

    const allowed = await dig(filter.port, 'txt.example.net', 'TXT');
    expect(allowed.status).toBe('NOERROR');
    expect(allowed.answers[0]).toMatchObject({ type: 'TXT', data: '"hello"' });
  });

  it('strips private and metadata addresses from answers', async () => {
    const mixed = await dig(filter.port, 'mixed.example.com');
    expect(mixed.status).toBe('NOERROR');
    expect(mixed.answers.map((x) => x.data)).toEqual(['93.184.216.35']);
    expect(sink.forHost('mixed.example.com')[0].detail?.stripped).toEqual([expect.objectContaining({ address: '10.0.0.5' })]);

    const priv = await dig(filter.port, 'private.example.com');
    expect(priv.status).toBe('NOERROR');
    expect(priv.answers).toEqual([]);
    expect(sink.forHost('private.example.com')[0]).toMatchObject({ verdict: 'deny', reason: 'private_address', status: 0 });
  });

  it('refuses an answer whose CNAME leads to a denied name, keeps one inside allowed names', async () => {
    const bad = await dig(filter.port, 'alias.example.com');
    expect(bad.status).toBe('NXDOMAIN');
    expect(bad.answers).toEqual([]);
    expect(sink.forHost('alias.example.com')[0]).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    expect(sink.forHost('alias.example.com')[0].detail?.cnameTarget).toBe('leak.attacker.test');

    const good = await dig(filter.port, 'www.example.com');
    expect(good.status).toBe('NOERROR');
    expect(good.answers.map((x) => x.type)).toEqual(['CNAME', 'A']);
    expect(good.answers[1].data).toBe('93.184.216.34');
  });

  it('answers a repeated lookup from the cache', async () => {
    await dig(filter.port, 'cached.example.com');
    const again = await dig(filter.port, 'cached.example.com');
    expect(again.answers.map((x) => x.data)).toEqual(['93.184.216.36']);
    expect(upstream.seen.filter((q) => q.name === 'cached.example.com')).toHaveLength(1);
    const recs = sink.forHost('cached.example.com');
    expect(recs).toHaveLength(2);
    expect(recs[1].detail?.cached).toBe(true);
    expect(recs[1].timings.dnsMs).toBeNull();
  });

  it('serves TCP queries and retries the upstream over TCP when it truncates', async () => {
    const r = await dig(filter.port, 'api.example.com', 'A', ['+tcp']);
    expect(r.status).toBe('NOERROR');
    expect(r.answers.map((x) => x.data)).toEqual(['93.184.216.34']);
    expect(sink.records.some((x) => x.detail?.transport === 'tcp' && x.host === 'api.example.com')).toBe(true);

    const t = await dig(filter.port, 'tconly.example.com');
    expect(t.answers.map((x) => x.data)).toEqual(['93.184.216.37']);
    expect(upstream.seen.filter((q) => q.name === 'tconly.example.com').map((q) => q.transport)).toEqual(['udp', 'tcp']);
  });

  it('sets TC when the answer exceeds the client UDP size, and the full answer comes over TCP', async () => {
    const udp = await dig(filter.port, 'big.example.com', 'A', ['+noedns', '+ignore']);
    expect(udp.flags).toContain('tc');
    expect(udp.answers).toEqual([]);
    const withEdns = await dig(filter.port, 'big.example.com', 'A', ['+bufsize=4096', '+ignore']);
    expect(withEdns.flags).not.toContain('tc');
    expect(withEdns.answers).toHaveLength(60);
    const retried = await dig(filter.port, 'big.example.com', 'A', ['+noedns']);
    expect(retried.answers).toHaveLength(60);
  });

  it('answers malformed packets with FORMERR or drops them, and keeps serving', async () => {
    const junk = Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]), Buffer.from([0x3f, 0x61])]);
    const res = await rawUdp(filter.port, junk);
    expect(res).not.toBeNull();
    expect(res!.readUInt16BE(0)).toBe(0x1234);
    expect(res![3] & 0x0f).toBe(1); // FORMERR
    expect(res![2] & 0x80).toBe(0x80);

    expect(await rawUdp(filter.port, Buffer.from([1, 2, 3]), { waitMs: 300 })).toBeNull();
    // A packet that claims to be a response is never answered (no reflection loops).
    const resp = Buffer.from(junk);
    resp[2] |= 0x80;
    expect(await rawUdp(filter.port, resp, { waitMs: 300 })).toBeNull();
    // No questions at all.
    const empty = packet.encode({ type: 'query', id: 9, questions: [] });
    const r0 = await rawUdp(filter.port, empty);
    expect(r0![3] & 0x0f).toBe(1);

    for (let i = 0; i < 20; i++) await rawUdp(filter.port, randomBytes(40), { from: '127.0.0.4', waitMs: 50 });
    const ok = await dig(filter.port, 'api.example.com');
    expect(ok.status).toBe('NOERROR');
    expect(sink.records.some((x) => x.reason === 'malformed')).toBe(true);
  });

  it('answers BADVERS to an EDNS version it does not speak', async () => {
    const r = await dig(filter.port, 'api.example.com', 'A', ['+edns=1', '+noednsneg']);
    expect(r.status).toBe('BADVERS');
    expect(r.answers).toEqual([]);
  });

  it('rate-limits a flooding client while others are still served', async () => {
    const flooder = '127.0.0.2';
    const q = packet.encode({ type: 'query', id: 1, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name: 'api.example.com' }] });
    let answered = 0;
    const batch: Promise<Buffer | null>[] = [];
    for (let i = 0; i < 300; i++) batch.push(rawUdp(filter.port, q, { from: flooder, waitMs: 1000 }));
    for (const r of await Promise.all(batch)) if (r) answered++;
    expect(answered).toBeGreaterThan(0);
    expect(answered).toBeLessThan(300);
    const limited = sink.records.filter((x) => x.reason === 'rate_limited' && x.client.startsWith(`${flooder}:`));
    expect(limited.length).toBeGreaterThanOrEqual(1);
    expect(limited.length).toBeLessThan(300 - answered);

    const other = await dig(filter.port, 'api.example.com', 'A', ['-b', '127.0.0.3']);
    expect(other.status).toBe('NOERROR');
  });
});

describe('filtering resolver options', () => {
  it('answers REFUSED when configured, and forwards in report mode while recording the deny', async () => {
    const up = await startTestUpstream(ZONE);
    const s = new MemorySink();
    const report = policyOf(`${POLICY}\nmode: report\n`);
    const guard = new AddressGuard({});
    let current = policy;
    const f = await startDnsFilter({
      listen: '127.0.0.1:0',
      upstreams: [`127.0.0.1:${up.port}`],
      policy: () => current,
      guard: () => guard,
      sink: s,
      refuseWith: 'REFUSED',
      cacheMaxEntries: 0,
    });
    try {
      const refused = await dig(f.port, 'elsewhere.test');
      expect(refused.status).toBe('REFUSED');
      expect(up.seen).toHaveLength(0);

      current = report; // a reload takes effect on the next query
      const fwd = await dig(f.port, 'elsewhere.test');
      expect(fwd.status).toBe('NOERROR');
      expect(fwd.answers.map((x) => x.data)).toEqual(['93.184.216.41']);
      expect(s.forHost('elsewhere.test')[1]).toMatchObject({ verdict: 'deny', mode: 'report', reason: 'no_rule' });
      // The address guard is never in report mode.
      const priv = await dig(f.port, 'private.example.com');
      expect(priv.answers).toEqual([]);
    } finally {
      await f.close();
      await up.close();
    }
  });

  it('refuses clients the policy cannot identify when auth is required', async () => {
    const up = await startTestUpstream(ZONE);
    const s = new MemorySink();
    const p = policyOf(`${POLICY}\nrequire_auth: true\n`);
    const guard = new AddressGuard({});
    const f = await startDnsFilter({
      listen: '[::1]:0',
      upstreams: [`127.0.0.1:${up.port}`],
      policy: () => p,
      guard: () => guard,
      sink: s,
    });
    try {
      const resolver = new Resolver({ timeout: 3000, tries: 1 });
      resolver.setServers([`[::1]:${f.port}`]);
      await expect(resolver.resolve4('api.example.com')).rejects.toMatchObject({ code: 'EREFUSED' });
      expect(up.seen).toHaveLength(0);
      expect(s.records[0]).toMatchObject({ reason: 'auth_required', status: 5 });
    } finally {
      await f.close();
      await up.close();
    }
  });

  it('listens on several addresses sharing one cache', async () => {
    const up = await startTestUpstream(ZONE);
    const guard = new AddressGuard({});
    const f = await startDnsFilter({
      listen: ['127.0.0.1:0', '[::1]:0'],
      upstreams: [`127.0.0.1:${up.port}`],
      policy: () => policy,
      guard: () => guard,
      sink: new MemorySink(),
    });
    try {
      expect(f.listeners.map((l) => l.address)).toEqual(['127.0.0.1', '::1']);
      const v4 = new Resolver({ timeout: 3000, tries: 1 });
      v4.setServers([`127.0.0.1:${f.listeners[0].port}`]);
      const v6 = new Resolver({ timeout: 3000, tries: 1 });
      v6.setServers([`[::1]:${f.listeners[1].port}`]);
      expect(await v4.resolve4('api.example.com')).toEqual(['93.184.216.34']);
      expect(await v6.resolve4('api.example.com')).toEqual(['93.184.216.34']);
      expect(up.seen.filter((q) => q.name === 'api.example.com')).toHaveLength(1);
    } finally {
      await f.close();
      await up.close();
    }
  });

  it('answers SERVFAIL when the upstream does not answer', async () => {
    const dgram = await import('node:dgram');
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
    const s = new MemorySink();
    const guard = new AddressGuard({});
    const f = await startDnsFilter({
      listen: '127.0.0.1:0',
      upstreams: [`127.0.0.1:${silent.address().port}`],
      policy: () => policy,
      guard: () => guard,
      sink: s,
      upstreamTimeoutMs: 300,
    });
    try {
      const r = await dig(f.port, 'api.example.com');
      expect(r.status).toBe('SERVFAIL');
      expect(s.records[0]).toMatchObject({ verdict: 'deny', reason: 'dns_failure', status: 2 });
    } finally {
      await f.close();
      silent.close();
    }
  });
});
