import type { Answer } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { DnsCache } from '../../src/dns/cache.js';
import { DnsConfigError, parseEndpoint } from '../../src/dns/endpoint.js';
import { canonicalPeer as clientAddress } from '../../src/net/ip.js';
import { RateLimiter } from '../../src/dns/rate-limit.js';

const a = (ttl: number, data = '93.184.216.34'): Answer => ({ type: 'A', name: 'x.example.com', ttl, data });
const soa = (ttl: number, minimum: number): Answer => ({
  type: 'SOA',
  name: 'example.com',
  ttl,
  data: { mname: 'ns', rname: 'admin', serial: 1, refresh: 1, retry: 1, expire: 1, minimum },
});

describe('DnsCache', () => {
  it('keeps an answer for its smallest TTL and counts TTLs down', () => {
    const c = new DnsCache({ maxEntries: 10 });
    const k = DnsCache.key('x.example.com', 'A', 'IN');
    c.set(k, { rcode: 0, answers: [a(100), a(30, '93.184.216.35')], authorities: [] }, 1_000_000);
    const hit = c.get(k, 1_000_000 + 10_500);
    expect(hit?.answers.map((r) => (r as { ttl: number }).ttl)).toEqual([90, 20]);
    expect(c.get(k, 1_000_000 + 30_000)).toBeNull();
  });

  it('caps TTLs, caches negative answers by their SOA, and never caches SERVFAIL or TTL 0', () => {
    const c = new DnsCache({ maxEntries: 10, maxTtlSec: 60, maxNegativeTtlSec: 5 });
    c.set('long', { rcode: 0, answers: [a(86400)], authorities: [] }, 0);
    expect(c.get('long', 59_000)).not.toBeNull();
    expect(c.get('long', 60_000)).toBeNull();
    c.set('nx', { rcode: 3, answers: [], authorities: [soa(3600, 3)] }, 0);
    expect(c.get('nx', 2_000)).not.toBeNull();
    expect(c.get('nx', 3_000)).toBeNull();
    c.set('nosoa', { rcode: 3, answers: [], authorities: [] }, 0);
    c.set('fail', { rcode: 2, answers: [], authorities: [] }, 0);
    c.set('zero', { rcode: 0, answers: [a(0)], authorities: [] }, 0);
    expect(c.size).toBe(0);
  });

  it('is bounded and evicts the least recently used entry', () => {
    const c = new DnsCache({ maxEntries: 2 });
    c.set('one', { rcode: 0, answers: [a(60)], authorities: [] }, 0);
    c.set('two', { rcode: 0, answers: [a(60)], authorities: [] }, 0);
    c.get('one', 1);
    c.set('three', { rcode: 0, answers: [a(60)], authorities: [] }, 2);
    expect(c.size).toBe(2);
    expect(c.get('two', 3)).toBeNull();
    expect(c.get('one', 3)).not.toBeNull();
    expect(new DnsCache({ maxEntries: 0 }).size).toBe(0);
  });
});

describe('RateLimiter', () => {
  it('allows a burst, then refills at the rate, per client', () => {
    const r = new RateLimiter({ perSecond: 2, burst: 3 });
    const results = [0, 0, 0, 0].map(() => r.take('10.0.0.1', 0).ok);
    expect(results).toEqual([true, true, true, false]);
    expect(r.take('10.0.0.2', 0).ok).toBe(true);
    expect(r.take('10.0.0.1', 400).ok).toBe(false);
    expect(r.take('10.0.0.1', 600).ok).toBe(true);
  });

  it('reports one refusal per run of refusals', () => {
    const r = new RateLimiter({ perSecond: 1, burst: 1 });
    r.take('c', 0);
    expect(r.take('c', 0)).toEqual({ ok: false, report: true });
    expect(r.take('c', 0)).toEqual({ ok: false, report: false });
    expect(r.take('c', 1000).ok).toBe(true);
    expect(r.take('c', 1000)).toEqual({ ok: false, report: true });
  });

  it('forgets the least recently seen client when the table is full', () => {
    const r = new RateLimiter({ perSecond: 1, burst: 1, maxClients: 2 });
    r.take('a', 0);
    r.take('b', 0);
    r.take('c', 0); // evicts a
    expect(r.take('a', 0).ok).toBe(true); // a starts afresh
    expect(r.take('c', 0).ok).toBe(false);
  });

  it('rejects nonsense settings', () => {
    expect(() => new RateLimiter({ perSecond: 0, burst: 1 })).toThrow(RangeError);
  });
});

describe('endpoints', () => {
  it('parses listen and upstream addresses', () => {
    expect(parseEndpoint('127.0.0.1:5353', null)).toEqual({ host: '127.0.0.1', family: 4, port: 5353 });
    expect(parseEndpoint('[::1]:53', null)).toEqual({ host: '::1', family: 6, port: 53 });
    expect(parseEndpoint('10.0.0.2', 53)).toEqual({ host: '10.0.0.2', family: 4, port: 53 });
    expect(parseEndpoint('fd00::1', 53)).toEqual({ host: 'fd00::1', family: 6, port: 53 });
    for (const bad of ['localhost:53', '127.0.0.1:99999', '[::1', '127.0.0.1:x', '1.2.3:53']) {
      expect(() => parseEndpoint(bad, 53), bad).toThrow(DnsConfigError);
    }
    expect(() => parseEndpoint('127.0.0.1', null)).toThrow(DnsConfigError);
  });

  it('reads IPv4-mapped clients as IPv4', () => {
    expect(clientAddress('::ffff:127.0.0.2')).toBe('127.0.0.2');
    expect(clientAddress('::1')).toBe('::1');
    expect(clientAddress('10.1.2.3')).toBe('10.1.2.3');
  });
});

describe('serve flag values', () => {
  it('parses --dns-refuse-code, --dns-rate-limit and --dns-cache-size', async () => {
    const { parseRefuseCode, parseRateLimit, parseCacheSize } = await import('../../src/dns/index.js');
    expect(parseRefuseCode('nxdomain')).toBe('NXDOMAIN');
    expect(parseRefuseCode('REFUSED')).toBe('REFUSED');
    expect(() => parseRefuseCode('servfail')).toThrow(DnsConfigError);
    expect(parseRateLimit('50')).toEqual({ perSecond: 50, burst: 100 });
    expect(parseRateLimit('10/15')).toEqual({ perSecond: 10, burst: 15 });
    expect(parseRateLimit('0')).toBeNull();
    expect(() => parseRateLimit('fast')).toThrow(DnsConfigError);
    expect(() => parseRateLimit('5/0')).toThrow(DnsConfigError);
    expect(parseCacheSize('0')).toBe(0);
    expect(() => parseCacheSize('-1')).toThrow(DnsConfigError);
  });
});
