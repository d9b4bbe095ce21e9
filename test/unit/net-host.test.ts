import { describe, expect, it } from 'vitest';
import { HostError, hostText, normalizeHost, normalizeHostPattern, type NormalizedHost } from '../../src/net/host.js';

const n = (value: string): NormalizedHost => ({ kind: 'name', value });
const ip4 = (value: string): NormalizedHost => ({ kind: 'ip', family: 4, value });
const ip6 = (value: string): NormalizedHost => ({ kind: 'ip', family: 6, value });

describe('normalizeHost', () => {
  const good: [string, NormalizedHost][] = [
    ['example.com', n('example.com')],
    ['Example.COM', n('example.com')],
    ['example.com.', n('example.com')],
    ['localhost', n('localhost')],
    ['_dmarc.example.com', n('_dmarc.example.com')],
    ['a-b.example', n('a-b.example')],
    ['bücher.example', n('xn--bcher-kva.example')],
    ['BÜCHER.example', n('xn--bcher-kva.example')],
    ['ＥＸＡＭＰＬＥ.com', n('example.com')],
    ['example。com', n('example.com')],
    ['xn--bcher-kva.example', n('xn--bcher-kva.example')],
    ['1.2.3.example', n('1.2.3.example')],
    ['0x7f.example', n('0x7f.example')],
    [`${'a'.repeat(63)}.com`, n(`${'a'.repeat(63)}.com`)],
    // IPv4 in every spelling
    ['127.0.0.1', ip4('127.0.0.1')],
    ['2130706433', ip4('127.0.0.1')],
    ['0177.0.0.1', ip4('127.0.0.1')],
    ['0x7f000001', ip4('127.0.0.1')],
    ['0X7F.1', ip4('127.0.0.1')],
    ['127.1', ip4('127.0.0.1')],
    ['127.0.1', ip4('127.0.0.1')],
    ['127.0.0.1.', ip4('127.0.0.1')],
    ['0', ip4('0.0.0.0')],
    ['010.010.010.010', ip4('8.8.8.8')],
    ['１２７.０.０.１', ip4('127.0.0.1')],
    ['127。0。0。1', ip4('127.0.0.1')],
    ['０ｘ７ｆ.１', ip4('127.0.0.1')],
    // IPv6, bracketed or bare
    ['[::1]', ip6('::1')],
    ['::1', ip6('::1')],
    ['[0:0:0:0:0:0:0:1]', ip6('::1')],
    ['[2001:DB8:0:0:0:0:0:1]', ip6('2001:db8::1')],
    // mapped literals are the IPv4 host itself (the socket connects to the IPv4)
    ['[::ffff:127.0.0.1]', ip4('127.0.0.1')],
    ['::ffff:7f00:1', ip4('127.0.0.1')],
    ['[::ffff:0:7f00:1]', ip6('::ffff:0:7f00:1')],
    ['[::127.0.0.1]', ip6('::7f00:1')],
    ['[fe80::1%25eth0]', ip6('fe80::1')],
    ['fe80::1%eth0', ip6('fe80::1')],
  ];
  it.each(good)('%s', (input, want) => {
    expect(normalizeHost(input)).toEqual(want);
  });

  const bad = [
    '',
    '.',
    'a..b',
    '.example.com',
    'example.com..',
    '-a.com',
    'a-.com',
    'a b.com',
    'a/b',
    'a\\b',
    'a@b',
    'a?b',
    'a#b',
    'a%41b',
    'a:b',
    'a*b.com',
    'a<b',
    'a"b',
    `${'a'.repeat(64)}.com`,
    `${'a.'.repeat(127)}com`,
    'x'.repeat(1025),
    '1.2.3.4.5',
    '256.1.1.1',
    '08.1.1.1',
    '0x100000000',
    '4294967296',
    'example.0x',
    '[127.0.0.1]',
    '[::1',
    '[::1]]',
    '[1::2::3]',
    '[fe80::1%25a b]',
    '[fe80::1%25a/b]',
    '[::ffff:0177.0.0.1]',
    '[::ffff:0x7f.0.0.1]',
    '[::ffff:127.1]',
    '1::2::3',
    'a／b',
    'exa\u0000mple.com',
  ];
  it.each(bad)('rejects %j', (input) => {
    expect(() => normalizeHost(input)).toThrow(HostError);
  });

  it('does not echo labels in errors (messages may reach a client)', () => {
    for (const input of ['bad+label<x>.com', 'sneaky"quote.com']) {
      try {
        normalizeHost(input);
        throw new Error('expected HostError');
      } catch (err) {
        expect(err).toBeInstanceOf(HostError);
        expect((err as Error).message).not.toMatch(/label<|sneaky/);
      }
    }
  });

  it('hostText is the canonical value', () => {
    expect(hostText(normalizeHost('[::1]'))).toBe('::1');
    expect(hostText(normalizeHost('Example.com.'))).toBe('example.com');
  });
});

describe('normalizeHostPattern', () => {
  const good: [string, string][] = [
    ['*', '*'],
    ['*.example.com', '*.example.com'],
    ['*.Example.COM.', '*.example.com'],
    ['api-*.example.com', 'api-*.example.com'],
    ['*.bücher.example', '*.xn--bcher-kva.example'],
    ['Example.com', 'example.com'],
  ];
  it.each(good)('%s', (input, want) => {
    expect(normalizeHostPattern(input)).toEqual(n(want));
  });
  it('a pattern without * is a host', () => {
    expect(normalizeHostPattern('0x7f.1')).toEqual(ip4('127.0.0.1'));
    expect(normalizeHostPattern('[::1]')).toEqual(ip6('::1'));
  });
  it.each(['*..com', 'a/*.com', '*.a b.com', '*:443', '*.-a.com', `*.${'a'.repeat(64)}`])('rejects %j', (input) => {
    expect(() => normalizeHostPattern(input)).toThrow(HostError);
  });
});
