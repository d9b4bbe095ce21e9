import { describe, expect, it } from 'vitest';
import {
  formatAuthority,
  parseCheckTarget,
  parseConnectTarget,
  parseProxyUrl,
  TargetError,
  type Target,
} from '../../src/net/target.js';

const name = (value: string, port: number): Target => ({ host: { kind: 'name', value }, port });
const v4 = (value: string, port: number): Target => ({ host: { kind: 'ip', family: 4, value }, port });
const v6 = (value: string, port: number): Target => ({ host: { kind: 'ip', family: 6, value }, port });

function targetError(fn: () => unknown): TargetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TargetError);
    return err as TargetError;
  }
  throw new Error('expected a TargetError');
}

describe('parseConnectTarget', () => {
  const good: [string, Target][] = [
    ['example.com:443', name('example.com', 443)],
    ['EXAMPLE.com.:443', name('example.com', 443)],
    ['api.example.com:1', name('api.example.com', 1)],
    ['a-b_c.example:65535', name('a-b_c.example', 65535)],
    ['bücher.example:443', name('xn--bcher-kva.example', 443)],
    ['1.2.3.4:80', v4('1.2.3.4', 80)],
    // every IPv4 spelling lands on the canonical address
    ['2130706433:443', v4('127.0.0.1', 443)],
    ['0177.0.0.1:443', v4('127.0.0.1', 443)],
    ['0x7f000001:443', v4('127.0.0.1', 443)],
    ['0x7f.1:443', v4('127.0.0.1', 443)],
    ['127.1:443', v4('127.0.0.1', 443)],
    ['127.0.0.1.:443', v4('127.0.0.1', 443)],
    ['１２７.０.０.１:443', v4('127.0.0.1', 443)],
    ['127。0。0。1:443', v4('127.0.0.1', 443)],
    // IPv6; mapped becomes its IPv4, other embedded forms stay IPv6 (the guard judges the embedded address)
    ['[::1]:443', v6('::1', 443)],
    ['[0:0:0:0:0:0:0:1]:443', v6('::1', 443)],
    ['[::ffff:127.0.0.1]:443', v4('127.0.0.1', 443)],
    ['[::127.0.0.1]:443', v6('::7f00:1', 443)],
    ['[64:ff9b::7f00:1]:443', v6('64:ff9b::7f00:1', 443)],
    ['[2002:7f00:1::]:443', v6('2002:7f00:1::', 443)],
    ['[fe80::1%25eth0]:443', v6('fe80::1', 443)],
    ['[2001:DB8::1]:8443', v6('2001:db8::1', 8443)],
  ];
  it.each(good)('%s', (input, want) => {
    expect(parseConnectTarget(input)).toEqual(want);
  });

  const bad: string[] = [
    '',
    'example.com',
    'example.com:',
    'example.com:0',
    'example.com:65536',
    'example.com:99999',
    'example.com:443e1',
    'example.com:0x1bb',
    'example.com:+443',
    'example.com: 443',
    'example.com:0443',
    'example.com:-1',
    'example.com:4 43',
    ':443',
    '[]:443',
    'user@example.com:443',
    'user:pw@example.com:443',
    'example.com:443/path',
    'example.com/x:443',
    'example.com:443?q',
    'example.com?:443',
    'example.com:443#f',
    'exa mple.com:443',
    ' example.com:443',
    'example.com:443 ',
    'example.com\t:443',
    'example.com\r\n:443',
    'ex%61mple.com:443',
    'example.com%00:443',
    'exa\\mple.com:443',
    '::1:443',
    '[::1]443',
    '[::1]:',
    '[::1',
    '[::1]x:443',
    '[127.0.0.1]:443',
    '[fe80::1%eth0]:443',
    '[fe80::1%25]:443',
    '[fe80::1%25e/th]:443',
    '[::ffff:0177.0.0.1]:443',
    '1.2.3.4.5:443',
    '256.0.0.1:443',
    '0x100000000:443',
    'a..b:443',
    '-a.com:443',
    `${'a'.repeat(64)}.com:443`,
    `${'a.'.repeat(130)}com:443`,
    'x'.repeat(2000) + ':443',
    'a*b.com:443',
    'xn--.com:443',
  ];
  it.each(bad)('rejects %j', (input) => {
    targetError(() => parseConnectTarget(input));
  });

  it('never echoes the input in the message', () => {
    for (const input of ['evil<script>.com:443', 'evil"x.com:443', 'ok.com:99999999', 'a b:1', 'u@h:1']) {
      const e = targetError(() => parseConnectTarget(input));
      expect(e.message).not.toContain('evil');
      expect(e.message).not.toContain('9999');
      expect(e.message).not.toMatch(/[\r\n]/);
    }
  });
});

describe('parseProxyUrl', () => {
  const good: [string, Target, string, string][] = [
    ['http://example.com/', name('example.com', 80), '/', ''],
    ['http://example.com', name('example.com', 80), '/', ''],
    ['HTTP://Example.COM:8080/a/b?x=1&y=2', name('example.com', 8080), '/a/b', '?x=1&y=2'],
    ['http://example.com?q', name('example.com', 80), '/', '?q'],
    ['http://example.com/?', name('example.com', 80), '/', '?'],
    // byte-exact path: escapes, dot segments, doubled slashes and case untouched
    ['http://example.com/%2e%2E/a%2Fb//c/./../D?%41=%42', name('example.com', 80), '/%2e%2E/a%2Fb//c/./../D', '?%41=%42'],
    ['http://example.com/a?b?c', name('example.com', 80), '/a', '?b?c'],
    ['http://[::1]:8080/x', v6('::1', 8080), '/x', ''],
    ['http://[::ffff:127.0.0.1]/', v4('127.0.0.1', 80), '/', ''],
    ['http://2130706433/', v4('127.0.0.1', 80), '/', ''],
    ['http://0x7f.1:81/', v4('127.0.0.1', 81), '/', ''],
  ];
  it.each(good)('%s', (input, target, path, query) => {
    expect(parseProxyUrl(input)).toEqual({ target, path, query });
  });

  const bad: string[] = [
    '/relative',
    'example.com:80',
    'http:/example.com/',
    'http:example.com',
    'http://',
    'http:///path',
    'http://:80/',
    'ftp://example.com/',
    'ws://example.com/',
    'http://user@example.com/',
    'http://user:pw@example.com/',
    'http://evil.com\\@good.com/',
    'http://good.com\\evil.com/',
    'http://example.com:/',
    'http://example.com:0/',
    'http://example.com:65536/',
    'http://example.com:080/',
    'http://example.com:8o/',
    'http://example.com/#frag',
    'http://example.com#frag',
    'http://example.com/a b',
    'http://example.com/\r\nX: y',
    'http://ex%61mple.com/',
    'http://[::1/',
    'http://::1/',
  ];
  it.each(bad)('rejects %j', (input) => {
    targetError(() => parseProxyUrl(input));
  });

  it('refuses schemes named like Object.prototype members (never read as a default port)', () => {
    for (const u of ['constructor://example.com/', 'CONSTRUCTOR://example.com:8080/x']) {
      expect(targetError(() => parseProxyUrl(u)).message, u).toBe('only http:// URLs are accepted');
      expect(() => parseCheckTarget(u), u).toThrow(TargetError);
    }
  });

  it('explains that https:// must use CONNECT', () => {
    for (const u of ['https://example.com/', 'HTTPS://example.com:443/x']) {
      expect(targetError(() => parseProxyUrl(u)).message).toMatch(/CONNECT/);
    }
  });
});

describe('parseCheckTarget', () => {
  const good: [string, Target][] = [
    ['example.com:443', name('example.com', 443)],
    ['[::1]:53', v6('::1', 53)],
    ['http://example.com/x', name('example.com', 80)],
    ['http://example.com:8080', name('example.com', 8080)],
    ['https://example.com/x?y#z', name('example.com', 443)],
    ['HTTPS://[2001:db8::1]:8443/', v6('2001:db8::1', 8443)],
    ['https://0x7f.1/', v4('127.0.0.1', 443)],
  ];
  it.each(good)('%s', (input, want) => {
    expect(parseCheckTarget(input)).toEqual(want);
  });

  const bad = ['example.com', '::1', '[::1]', 'ftp://example.com/', 'https://u@example.com/', 'https://example.com:0/', ''];
  it.each(bad)('rejects %j', (input) => {
    targetError(() => parseCheckTarget(input));
  });
});

describe('formatAuthority', () => {
  it.each([
    [name('example.com', 443), 'example.com:443'],
    [v4('127.0.0.1', 80), '127.0.0.1:80'],
    [v6('::1', 8080), '[::1]:8080'],
  ] as [Target, string][])('%j -> %s', (t, want) => {
    expect(formatAuthority(t)).toBe(want);
    expect(parseConnectTarget(formatAuthority(t))).toEqual(t);
  });
});
