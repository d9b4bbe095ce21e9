import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { AddressGuard, type GuardResult } from '../../src/net/guard.js';

const cases = parse(readFileSync(new URL('../fixtures/guard-cases.yaml', import.meta.url), 'utf8'), {
  intAsBigInt: false,
}) as { default: Record<string, string> };

const expected = (v: string): GuardResult => (v === 'ok' ? { ok: true } : { ok: false, range: v });

describe('AddressGuard ranges (fixture table)', () => {
  const guard = new AddressGuard();
  const entries = Object.entries(cases.default);
  it('has a substantial table', () => {
    expect(entries.length).toBeGreaterThan(100);
  });
  it.each(entries)('%s -> %s', (address, want) => {
    expect(guard.check(address)).toEqual(expected(want));
    expect(guard.check(address, 443)).toEqual(expected(want));
  });
});

describe('AddressGuard exemptions', () => {
  const table: [string[], string, GuardResult][] = [
    [['10.0.0.0/8'], '10.1.2.3', { ok: true }],
    [['10.0.0.0/8'], '192.168.1.1', { ok: false, range: 'private' }],
    [['10.1.0.0/16'], '10.2.0.1', { ok: false, range: 'private' }],
    [['127.0.0.1'], '127.0.0.1', { ok: true }],
    [['127.0.0.1/32'], '127.0.0.2', { ok: false, range: 'loopback' }],
    // embedded forms need the IPv4 to be exempt
    [['10.0.0.0/8'], '::ffff:10.1.2.3', { ok: true }],
    [['10.0.0.0/8'], '64:ff9b::a01:203', { ok: true }],
    [['10.0.0.0/8'], '2002:a01:203::', { ok: true }],
    [['::ffff:0:0/96'], '::ffff:10.1.2.3', { ok: false, range: 'mapped:private' }],
    [['64:ff9b::/96'], '64:ff9b::7f00:1', { ok: false, range: 'nat64:loopback' }],
    // an exempted Teredo or local NAT64 range never carries a metadata IPv4 through (client 169.254.169.254)
    [['2001::/32'], '2001:0:4136:e378:8000:63bf:5601:5601', { ok: false, range: 'teredo:metadata' }],
    [['2001::/32'], '2001:0:4136:e378:8000:63bf:f7f7:f7f7', { ok: true }],
    [['64:ff9b:1::/48'], '64:ff9b:1::a9fe:a9fe', { ok: false, range: 'nat64-local:metadata' }],
    [['64:ff9b:1::/48'], '64:ff9b:1::808:808', { ok: true }],
    // families do not cross
    [['::/0'], '10.0.0.1', { ok: false, range: 'private' }],
    [['0.0.0.0/0'], 'fd00::1', { ok: false, range: 'unique-local' }],
    [['fd00::/8'], 'fd00::1', { ok: true }],
    [['::1/128'], '::1', { ok: true }],
    [['fe80::/10'], 'fe80::1', { ok: true }],
    // a wide exemption opens the ranges but never the metadata addresses
    [['0.0.0.0/0'], '10.0.0.1', { ok: true }],
    [['0.0.0.0/0'], '169.254.169.254', { ok: false, range: 'metadata' }],
    [['0.0.0.0/0'], '168.63.129.16', { ok: false, range: 'metadata' }],
    [['0.0.0.0/0'], '::ffff:169.254.169.254', { ok: false, range: 'mapped:metadata' }],
    [['169.0.0.0/8'], '169.254.169.254', { ok: false, range: 'metadata' }],
    [['169.254.0.0/15'], '169.254.169.254', { ok: false, range: 'metadata' }],
    [['::/0'], 'fd00:ec2::254', { ok: false, range: 'metadata' }],
    [['fd00::/8'], 'fd00:ec2::254', { ok: false, range: 'metadata' }],
    // a narrow, explicit one does
    [['169.254.0.0/16'], '169.254.169.254', { ok: true }],
    [['169.254.169.254/32'], '169.254.169.254', { ok: true }],
    [['169.254.169.254'], '::ffff:169.254.169.254', { ok: true }],
    [['fd00:ec2::/64'], 'fd00:ec2::254', { ok: true }],
    // :: is never exemptible (there is nothing to reach)
    [['::/0'], '::', { ok: false, range: 'unspecified' }],
    // several exemptions
    [['192.168.0.0/16', '172.16.0.0/12'], '172.20.1.1', { ok: true }],
    [['192.168.0.0/16', '172.16.0.0/12'], '100.64.0.1', { ok: false, range: 'cgnat' }],
  ];
  it.each(table)('exempt %j: %s', (exempt, address, want) => {
    expect(new AddressGuard({ exempt }).check(address)).toEqual(want);
  });

  it('refuses malformed exemptions at construction', () => {
    expect(() => new AddressGuard({ exempt: ['10.0.0.1/8'] })).toThrow();
    expect(() => new AddressGuard({ exempt: ['nope'] })).toThrow();
  });
});

describe('AddressGuard self (the proxy own listeners)', () => {
  const exemptAll = ['0.0.0.0/0', '::/0'];

  it('refuses an exact listener even when exempt, on that port only', () => {
    const g = new AddressGuard({ exempt: exemptAll, self: [{ address: '127.0.0.1', port: 8080 }] });
    expect(g.check('127.0.0.1', 8080)).toEqual({ ok: false, range: 'self' });
    expect(g.check('::ffff:127.0.0.1', 8080)).toEqual({ ok: false, range: 'self' });
    expect(g.check('127.0.0.1', 8081)).toEqual({ ok: true });
    expect(g.check('127.0.0.1')).toEqual({ ok: true });
    // the unspecified address as a destination is this host
    expect(g.check('0.0.0.0', 8080)).toEqual({ ok: false, range: 'self' });
    expect(g.check('::', 8080)).toEqual({ ok: false, range: 'self' });
    expect(g.check('::ffff:0.0.0.0', 8080)).toEqual({ ok: false, range: 'self' });
    expect(g.check('0.0.0.0', 8081)).toEqual({ ok: true });
  });

  it('a wildcard listener covers loopback, every local interface address and the unspecified address', () => {
    const g = new AddressGuard({ exempt: exemptAll, self: [{ address: '0.0.0.0', port: 3128 }] });
    const local = Object.values(networkInterfaces())
      .flatMap((l) => l ?? [])
      .map((i) => i.address.replace(/%.*$/, ''));
    expect(local.length).toBeGreaterThan(0);
    for (const a of [...local, '127.0.0.1', '127.9.9.9', '::1', '0.0.0.0', '::', '::ffff:127.0.0.1']) {
      expect(g.check(a, 3128), a).toEqual({ ok: false, range: 'self' });
    }
    expect(g.check('127.0.0.1', 3129)).toEqual({ ok: true });
    expect(g.check('8.8.8.8', 3128)).toEqual({ ok: true });
  });

  it('an IPv6 wildcard listener is treated as dual-stack', () => {
    const g = new AddressGuard({ exempt: exemptAll, self: [{ address: '::', port: 53 }] });
    expect(g.check('127.0.0.1', 53)).toEqual({ ok: false, range: 'self' });
    expect(g.check('::1', 53)).toEqual({ ok: false, range: 'self' });
  });

  it('self applies before ranges, so an unexempted listener address says self', () => {
    const g = new AddressGuard({ self: [{ address: '::1', port: 9000 }] });
    expect(g.check('::1', 9000)).toEqual({ ok: false, range: 'self' });
    expect(g.check('0:0::1', 9000)).toEqual({ ok: false, range: 'self' });
    expect(g.check('::1', 9001)).toEqual({ ok: false, range: 'loopback' });
  });

  it('refuses a listener that is not an address', () => {
    expect(() => new AddressGuard({ self: [{ address: 'localhost', port: 1 }] })).toThrow();
  });
});
