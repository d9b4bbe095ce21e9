/**
 * SOCKS5 wire format (RFC 1928, RFC 1929 username/password), pure: bytes in, a parsed message or
 * "need more" out. Every parser reads from the start of what the client sent so far, so a greeting
 * that arrives byte by byte and one that arrives in the same segment as the request parse alike; the
 * caller keeps whatever follows (`used`) for the next step.
 */
import { canonicalPeer, parseIp } from '../net/ip.js';
import type { Reason } from '../policy/vocabulary.js';

export const SOCKS_VERSION = 0x05;
export const AUTH_VERSION = 0x01;

export const METHOD = { noAuth: 0x00, userPass: 0x02, none: 0xff } as const;
export const COMMAND = { connect: 0x01, bind: 0x02, udpAssociate: 0x03 } as const;
export const ATYP = { ipv4: 0x01, domain: 0x03, ipv6: 0x04 } as const;

/** RFC 1928 §6 reply codes. */
export const REPLY = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** Not enough bytes yet: wait for the next segment. */
export const NEED_MORE = { kind: 'need' } as const;

/** A message that is not SOCKS5 (or not well-formed): the connection is closed, with why. */
export interface Malformed {
  kind: 'bad';
  /** A SOCKS4/4a client (first byte 0x04), told apart from plain garbage for the record. */
  socks4?: boolean;
  error: string;
}

export type Parsed<T> = typeof NEED_MORE | Malformed | ({ kind: 'ok'; used: number } & T);

/** Client greeting: VER, NMETHODS, METHODS. */
export function parseGreeting(buf: Buffer): Parsed<{ methods: number[] }> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] === 0x04) return { kind: 'bad', socks4: true, error: 'SOCKS4 is not supported (use SOCKS5)' };
  if (buf[0] !== SOCKS_VERSION) return { kind: 'bad', error: 'not a SOCKS5 greeting' };
  if (buf.length < 2) return NEED_MORE;
  const n = buf[1];
  if (n === 0) return { kind: 'bad', error: 'greeting offers no authentication method' };
  if (buf.length < 2 + n) return NEED_MORE;
  return { kind: 'ok', used: 2 + n, methods: [...buf.subarray(2, 2 + n)] };
}

/**
 * The method the proxy picks. Credentials offered win (the client has an identity it wants used);
 * no-auth only when identification without credentials succeeds (the source address, or a policy
 * without require_auth); otherwise none is acceptable.
 */
export function chooseMethod(offered: number[], noAuthAcceptable: boolean): number {
  if (offered.includes(METHOD.userPass)) return METHOD.userPass;
  if (noAuthAcceptable && offered.includes(METHOD.noAuth)) return METHOD.noAuth;
  return METHOD.none;
}

/**
 * RFC 1929 sub-negotiation: VER 0x01, ULEN, UNAME, PLEN, PASSWD. Decoded as UTF-8, as the Basic
 * credentials of Proxy-Authorization are, so both name the same agent the same way.
 */
export function parseUserPass(buf: Buffer): Parsed<{ username: string; password: string }> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== AUTH_VERSION) return { kind: 'bad', error: 'bad username/password sub-negotiation version' };
  if (buf.length < 2) return NEED_MORE;
  const ulen = buf[1];
  if (buf.length < 3 + ulen) return NEED_MORE;
  const plen = buf[2 + ulen];
  if (buf.length < 3 + ulen + plen) return NEED_MORE;
  return {
    kind: 'ok',
    used: 3 + ulen + plen,
    username: buf.toString('utf8', 2, 2 + ulen),
    password: buf.toString('utf8', 3 + ulen, 3 + ulen + plen),
  };
}

export interface SocksRequest {
  command: number;
  atyp: number;
  /**
   * The destination as a CONNECT authority ("name:port", "a.b.c.d:port", "[v6]:port"), to be parsed
   * by the same target parser CONNECT uses. Raw for a domain: the parser judges it, not this module.
   */
  authority: string;
  port: number;
}

/**
 * Request: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT. An unknown ATYP cannot be skipped (its length is
 * unknown), so it is its own outcome: the caller answers 0x08 and closes.
 */
export function parseRequest(buf: Buffer): Parsed<SocksRequest> | { kind: 'atyp'; atyp: number } {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== SOCKS_VERSION) return { kind: 'bad', error: 'not a SOCKS5 request' };
  if (buf.length < 4) return NEED_MORE;
  const command = buf[1];
  if (buf[2] !== 0x00) return { kind: 'bad', error: 'reserved byte of the request is not zero' };
  const atyp = buf[3];
  let host: string;
  let end: number;
  if (atyp === ATYP.ipv4) {
    end = 4 + 4;
    if (buf.length < end + 2) return NEED_MORE;
    host = [...buf.subarray(4, 8)].join('.');
  } else if (atyp === ATYP.ipv6) {
    end = 4 + 16;
    if (buf.length < end + 2) return NEED_MORE;
    const groups: string[] = [];
    for (let i = 4; i < end; i += 2) groups.push(buf.readUInt16BE(i).toString(16));
    host = `[${groups.join(':')}]`;
  } else if (atyp === ATYP.domain) {
    if (buf.length < 5) return NEED_MORE;
    const len = buf[4];
    if (len === 0) return { kind: 'bad', error: 'empty domain name' };
    end = 5 + len;
    if (buf.length < end + 2) return NEED_MORE;
    // latin1 keeps every byte as one character, so control bytes and non-ASCII reach the target parser intact.
    host = buf.toString('latin1', 5, end);
  } else {
    return { kind: 'atyp', atyp };
  }
  const port = buf.readUInt16BE(end);
  return { kind: 'ok', used: end + 2, command, atyp, authority: `${host}:${port}`, port };
}

/** Method selection: VER, METHOD. */
export function methodReply(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** RFC 1929 status: 0x00 success, anything else failure (the client must close). */
export function authReply(ok: boolean): Buffer {
  return Buffer.from([AUTH_VERSION, ok ? 0x00 : 0x01]);
}

/** Reply: VER, REP, RSV, ATYP, BND.ADDR, BND.PORT. Without a (parseable) bound address: 0.0.0.0:0. */
export function reply(code: number, bound?: { address: string; port: number }): Buffer {
  const ip = bound ? parseIp(canonicalPeer(bound.address)) : null;
  const bytes = ip ? ip.bytes : [0, 0, 0, 0];
  const port = ip && bound ? bound.port : 0;
  return Buffer.from([SOCKS_VERSION, code, 0x00, bytes.length === 4 ? ATYP.ipv4 : ATYP.ipv6, ...bytes, port >> 8, port & 0xff]);
}

/**
 * The reply code for a refusal or failure, from the record's reason and, for a failed dial, the errno.
 * Timeouts (DNS aside, which is "host unreachable") are 0x06: distinct from a refusal for the client.
 */
export function replyFor(reason: Reason, cause?: string): number {
  switch (reason) {
    case 'dns_failure':
      return REPLY.hostUnreachable;
    case 'upstream_timeout':
      return REPLY.ttlExpired;
    case 'upstream_error':
      if (cause === 'ECONNREFUSED') return REPLY.connectionRefused;
      if (cause === 'ENETUNREACH') return REPLY.networkUnreachable;
      if (cause === 'EHOSTUNREACH' || cause === 'EHOSTDOWN') return REPLY.hostUnreachable;
      if (cause === 'ETIMEDOUT') return REPLY.ttlExpired;
      return REPLY.generalFailure;
    case 'bad_request':
    case 'limit_exceeded':
    case 'shutting_down':
    case 'upstream_tls':
      return REPLY.generalFailure;
    default:
      // Every policy, guard and identity refusal: "connection not allowed by ruleset".
      return REPLY.notAllowed;
  }
}
