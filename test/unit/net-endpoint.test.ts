import { describe, expect, it } from 'vitest';
import { EndpointError, isLoopbackHost, parseHostPort, parseIpEndpoint, splitHostPort } from '../../src/net/endpoint.js';

describe('splitHostPort', () => {
  it.each([
    ['127.0.0.1:3128', '127.0.0.1', '3128'],
    ['[::1]:53', '::1', '53'],
    ['[::1]', '::1', null],
    ['fd00::1', 'fd00::1', null],
    ['fd00::/64', 'fd00::/64', null],
    [':3128', '', '3128'],
    ['localhost', 'localhost', null],
  ])('%s', (text, host, port) => {
    expect(splitHostPort(text)).toEqual({ host, port });
  });
});

describe('parseHostPort and parseIpEndpoint', () => {
  it('listeners may use port 0 and names; destinations need a real port', () => {
    expect(parseHostPort('localhost:0', { allowZero: true })).toEqual({ host: 'localhost', port: 0 });
    expect(() => parseHostPort('10.0.0.1:0')).toThrow(EndpointError);
    expect(parseIpEndpoint('10.0.0.1', { defaultPort: 53 })).toEqual({ address: '10.0.0.1', family: 4, port: 53 });
    expect(parseIpEndpoint('[FD00::0001]:443')).toEqual({ address: 'fd00::1', family: 6, port: 443 });
  });

  it.each(['1.2.3:53', 'resolver.example:53', '10.0.0.1:65536', '10.0.0.1:443e1', '10.0.0.1:+53', '[::1', '[::1]x', 'fe80::1%eth0', '10.0.0.1'])(
    'refuses %s as an IP endpoint without a default port',
    (text) => {
      expect(() => parseIpEndpoint(text)).toThrow(EndpointError);
    },
  );

  it('only literal loopback (or localhost) counts as loopback', () => {
    for (const h of ['127.0.0.1', '127.9.9.9', '::1', 'localhost', '0:0:0:0:0:0:0:1']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '127.0.0.1.nip.io']) expect(isLoopbackHost(h)).toBe(false);
  });
});
