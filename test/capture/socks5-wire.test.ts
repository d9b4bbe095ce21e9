import { describe, expect, it } from 'vitest';
import { chooseMethod, METHOD, parseGreeting, parseRequest, parseUserPass, reply, REPLY, replyFor } from '../../src/capture/socks5-wire.js';
import { greeting, requestDomain, requestIpv4, requestIpv6, userPass } from './socks-helpers.js';

describe('SOCKS5 wire format', () => {
  it('every strict prefix of a message needs more bytes; the whole message parses and reports what it used', () => {
    const cases: [(b: Buffer) => { kind: string; used?: number }, Buffer][] = [
      [parseGreeting, greeting(0, 2)],
      [parseUserPass, userPass('coder', 'pässword')],
      [parseRequest, requestDomain('example.com', 443)],
      [parseRequest, requestIpv4('192.0.2.1', 80)],
      [parseRequest, requestIpv6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 443)],
    ];
    for (const [parse, msg] of cases) {
      for (let i = 0; i < msg.length; i++) expect(parse(msg.subarray(0, i)).kind).toBe('need');
      const whole = parse(Buffer.concat([msg, Buffer.from('trailing')]));
      expect(whole).toMatchObject({ kind: 'ok', used: msg.length });
    }
  });

  it('requests become CONNECT authorities for the shared target parser', () => {
    expect(parseRequest(requestDomain('Example.COM', 443))).toMatchObject({ authority: 'Example.COM:443', command: 1, atyp: 3 });
    expect(parseRequest(requestIpv4('192.0.2.1', 80))).toMatchObject({ authority: '192.0.2.1:80', atyp: 1 });
    expect(parseRequest(requestIpv6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 8443))).toMatchObject({ authority: '[2001:db8:0:0:0:0:0:1]:8443', atyp: 4 });
    expect(parseRequest(Buffer.from([5, 1, 0, 9, 1, 2]))).toEqual({ kind: 'atyp', atyp: 9 });
    expect(parseRequest(Buffer.from([5, 1, 1, 1, 1, 2, 3, 4, 0, 80]))).toMatchObject({ kind: 'bad' });
    expect(parseRequest(Buffer.from([5, 1, 0, 3, 0, 0, 80]))).toMatchObject({ kind: 'bad', error: 'empty domain name' });
  });

  it('SOCKS4 is told apart from garbage; a greeting must offer a method', () => {
    expect(parseGreeting(Buffer.from([4, 1]))).toMatchObject({ kind: 'bad', socks4: true });
    expect(parseGreeting(Buffer.from('GET'))).toMatchObject({ kind: 'bad', error: 'not a SOCKS5 greeting' });
    expect(parseGreeting(Buffer.from([5, 0]))).toMatchObject({ kind: 'bad' });
  });

  it('method choice: offered credentials win; no-auth only when acceptable; otherwise none', () => {
    expect(chooseMethod([0, 2], true)).toBe(METHOD.userPass);
    expect(chooseMethod([0], true)).toBe(METHOD.noAuth);
    expect(chooseMethod([0], false)).toBe(METHOD.none);
    expect(chooseMethod([1, 3, 0x80], true)).toBe(METHOD.none);
  });

  it('replies carry the bound address in its own family, or 0.0.0.0:0', () => {
    expect([...reply(0, { address: '127.0.0.1', port: 0x1234 })]).toEqual([5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34]);
    expect([...reply(0, { address: '::ffff:10.1.2.3', port: 1 })]).toEqual([5, 0, 0, 1, 10, 1, 2, 3, 0, 1]);
    const v6 = reply(0, { address: '2001:db8::5', port: 443 });
    expect(v6.length).toBe(22);
    expect([...v6.subarray(0, 6)]).toEqual([5, 0, 0, 4, 0x20, 0x01]);
    expect(v6[19]).toBe(5);
    expect([...reply(REPLY.notAllowed)]).toEqual([5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('reply codes for every refusal and failure', () => {
    expect(replyFor('rule_deny')).toBe(REPLY.notAllowed);
    expect(replyFor('no_rule')).toBe(REPLY.notAllowed);
    expect(replyFor('private_address')).toBe(REPLY.notAllowed);
    expect(replyFor('address_not_allowed')).toBe(REPLY.notAllowed);
    expect(replyFor('dns_failure')).toBe(REPLY.hostUnreachable);
    expect(replyFor('upstream_error', 'ECONNREFUSED')).toBe(REPLY.connectionRefused);
    expect(replyFor('upstream_error', 'ENETUNREACH')).toBe(REPLY.networkUnreachable);
    expect(replyFor('upstream_error', 'EHOSTUNREACH')).toBe(REPLY.hostUnreachable);
    expect(replyFor('upstream_error', 'ECONNRESET')).toBe(REPLY.generalFailure);
    expect(replyFor('upstream_timeout', 'ETIMEDOUT')).toBe(REPLY.ttlExpired);
    expect(replyFor('bad_request')).toBe(REPLY.generalFailure);
    expect(replyFor('shutting_down')).toBe(REPLY.generalFailure);
  });
});
