import { describe, expect, it } from 'vitest';
import { canonicalIp, cidrContains, parseCidr } from '../../src/net/ip.js';

describe('canonicalIp', () => {
  const good: [string, 4 | 6, string][] = [
    ['1.2.3.4', 4, '1.2.3.4'],
    ['2130706433', 4, '127.0.0.1'],
    ['0177.0.0.1', 4, '127.0.0.1'],
    ['0x7f000001', 4, '127.0.0.1'],
    ['0x7f.1', 4, '127.0.0.1'],
    ['127.1', 4, '127.0.0.1'],
    ['1.2.3', 4, '1.2.0.3'],
    ['[::1]', 6, '::1'],
    ['::1', 6, '::1'],
    ['0:0:0:0:0:0:0:1', 6, '::1'],
    ['::', 6, '::'],
    ['2001:DB8:0000:0000:0000:0000:0000:0001', 6, '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', 6, '2001:db8::1:0:0:1'],
    ['2001:db8::0:1', 6, '2001:db8::1'],
    ['::ffff:127.0.0.1', 6, '::ffff:7f00:1'],
    ['::FFFF:7F00:1', 6, '::ffff:7f00:1'],
    // compatible form keeps its bits (ipaddr.js alone would read it as mapped)
    ['::127.0.0.1', 6, '::7f00:1'],
    ['64:ff9b::8.8.8.8', 6, '64:ff9b::808:808'],
    ['fe80::1%eth0', 6, 'fe80::1'],
    ['fe80::1%1', 6, 'fe80::1'],
  ];
  it.each(good)('%s', (input, family, address) => {
    expect(canonicalIp(input)).toEqual({ family, address });
  });

  const bad = [
    '',
    'example.com',
    '1.2.3.4.5',
    '256.0.0.1',
    '08.0.0.1',
    '1.2.3.4 ',
    ' 1.2.3.4',
    '1.2.3.4%eth0',
    '1::2::3',
    '12345::1',
    '::ffff:256.1.1.1',
    '::ffff:0177.0.0.1',
    '::ffff:01.2.3.4',
    '::ffff:0x7f.0.0.1',
    '::ffff:127.1',
    'fe80::1%',
    'fe80::1%a b',
    'fe80::1%a/b',
    'fe80::1%25%25',
    '1.2.3.4/8',
  ];
  it.each(bad)('rejects %j', (input) => {
    expect(canonicalIp(input)).toBeNull();
  });
});

describe('parseCidr', () => {
  const good: [string, string, 4 | 6][] = [
    ['10.0.0.0/8', '10.0.0.0/8', 4],
    ['10.1.2.3', '10.1.2.3/32', 4],
    ['0.0.0.0/0', '0.0.0.0/0', 4],
    ['fd00::/8', 'fd00::/8', 6],
    ['FD00:0::/8', 'fd00::/8', 6],
    ['::1', '::1/128', 6],
    ['::/0', '::/0', 6],
    ['::ffff:10.0.0.0/104', '::ffff:a00:0/104', 6],
  ];
  it.each(good)('%s', (input, text, family) => {
    const c = parseCidr(input);
    expect(c.text).toBe(text);
    expect(c.family).toBe(family);
  });

  it.each(['10.0.0.1/8', 'fd00::1/8', '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/a', 'x/8', '/8'])(
    'rejects %j',
    (input) => {
      expect(() => parseCidr(input)).toThrow();
    },
  );
});

describe('cidrContains', () => {
  const table: [string, string, boolean][] = [
    ['10.0.0.0/8', '10.255.0.1', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['192.168.1.0/24', '192.168.1.255', true],
    ['192.168.1.0/24', '192.168.2.0', false],
    ['fd00::/8', 'fd12::1', true],
    ['fd00::/8', 'fe00::1', false],
    ['::/0', '2001:db8::1', true],
    // no implicit mapping between families
    ['10.0.0.0/8', '::ffff:a00:1', false],
    ['::/0', '10.0.0.1', false],
    ['::ffff:0:0/96', '10.0.0.1', false],
  ];
  it.each(table)('%s contains %s: %s', (cidr, address, want) => {
    expect(cidrContains(parseCidr(cidr), address)).toBe(want);
  });
});
