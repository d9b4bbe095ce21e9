import { isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';

export type IpFamily = 4 | 6;

const ZONE = /^[A-Za-z0-9_.~-]{1,64}$/;

/**
 * Parse an IP address in any spelling ipaddr.js accepts (IPv4 decimal, octal, hex, short forms; IPv6
 * with or without zone) to its canonical text: dotted quad for IPv4, RFC 5952 compressed for IPv6,
 * zone dropped (a zone only says which interface, never which host). Returns null when not an address.
 */
export function canonicalIp(text: string): { family: IpFamily; address: string } | null {
  // Fast path: already-canonical dotted decimal is its own canonical form (proved equal to the full
  // path over a generated corpus in test/unit/net-fast-paths.test.ts).
  if (isCanonicalIpv4(text)) return { family: 4, address: text };
  if (text.includes(':')) {
    // IPv6 parsing through ipaddr.js costs microseconds; the same few literals recur per request.
    const hit = v6Memo.get(text);
    if (hit !== undefined) return hit;
    const ip = parseIp(text);
    const r = ip && Object.freeze({ family: ip.family, address: ip.address });
    if (v6Memo.size >= V6_MEMO_MAX) v6Memo.clear();
    v6Memo.set(text, r);
    return r;
  }
  const ip = parseIp(text);
  return ip && { family: ip.family, address: ip.address };
}

/** The full canonicalIp, without fast path or memo: the reference the fast paths are tested against. */
export function canonicalIpFull(text: string): { family: IpFamily; address: string } | null {
  const ip = parseIp(text);
  return ip && { family: ip.family, address: ip.address };
}

// Bounded so attacker-chosen literals cannot grow it: cleared whole when full (a pure function, so a
// miss only costs the parse).
const V6_MEMO_MAX = 256;
const v6Memo = new Map<string, Readonly<{ family: IpFamily; address: string }> | null>();

/**
 * Whether `s` is an IPv4 address in canonical dotted-decimal form: exactly four decimal octets 0-255,
 * no leading zeros, nothing else. Such text is its own canonical form under every parser here
 * (WHATWG, ipaddr.js), which is what lets the fast paths answer without them.
 */
export function isCanonicalIpv4(s: string): boolean {
  const n = s.length;
  if (n < 7 || n > 15) return false;
  let dots = 0;
  let digits = 0;
  let octet = 0;
  let first = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return false;
      digits = 0;
      octet = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 0) first = c;
      else if (first === 48) return false; // leading zero: octal in WHATWG / inet_aton
      if (++digits > 3) return false;
      octet = octet * 10 + (c - 48);
      if (octet > 255) return false;
    } else {
      return false;
    }
  }
  return dots === 3 && digits > 0;
}

/** canonicalIp plus the address bytes (4 or 16), for callers that test bits (the address guard). */
export function parseIp(text: string): { family: IpFamily; address: string; bytes: number[] } | null {
  let s = text;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const pct = s.indexOf('%');
  if (pct !== -1) {
    if (!s.includes(':')) return null; // zones exist only on IPv6
    // A zone is an interface name or index; anything else (spaces, slashes, escapes) is smuggling.
    if (!ZONE.test(s.slice(pct + 1))) return null;
    s = s.slice(0, pct);
  }
  if (s.includes(':')) {
    const hex = dottedTailToHex(s);
    if (hex === null) return null;
    s = hex;
  }
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // parse throws on anything invalid; no separate isValid pass (ipaddr.js parsing is not cheap).
    parsed = ipaddr.parse(s);
  } catch {
    return null;
  }
  if (parsed.kind() === 'ipv4') return { family: 4, address: parsed.toString(), bytes: parsed.toByteArray() };
  const v6 = parsed as ipaddr.IPv6;
  return { family: 6, address: v6.toRFC5952String(), bytes: v6.toByteArray() };
}

/**
 * ipaddr.js reads any `…:a.b.c.d` tail as IPv4-mapped, turning the IPv4-compatible `::a.b.c.d` into
 * `::ffff:a.b.c.d`, a different address. Rewrite the tail as two hex groups so the bits stay as written.
 */
function dottedTailToHex(s: string): string | null {
  if (!s.includes('.')) return s;
  // Inside IPv6 the IPv4 tail is strict dotted decimal (RFC 4291, WHATWG): no octal, hex or short
  // forms, which ipaddr.js would otherwise read in differing ways (0177 as 177, 0x7f as 127).
  const m = /^(.*:)(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.exec(s);
  if (!m) return null;
  const o = m.slice(2).map(Number);
  return `${m[1]}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
}

export interface Cidr {
  family: IpFamily;
  /** Canonical text, e.g. 10.0.0.0/8 or fd00::/8. */
  text: string;
  range: [ipaddr.IPv4 | ipaddr.IPv6, number];
}

/**
 * Parse a CIDR (or a bare address, taken as /32 or /128). Host bits set below the prefix are an
 * error: `10.0.0.1/8` almost always means a typo, and silently widening it would allow more than asked.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const ip = canonicalIp(addrText);
  if (!ip) throw new Error(`not an IP address or CIDR: ${JSON.stringify(text)}`);
  const max = ip.family === 4 ? 32 : 128;
  let bits = max;
  if (slash !== -1) {
    const b = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(b) || Number(b) > max) throw new Error(`bad prefix length in ${JSON.stringify(text)}`);
    bits = Number(b);
  }
  const addr = ipaddr.parse(ip.address);
  const network = networkAddress(addr, bits);
  if (network.toString() !== addr.toString() && ipaddr.parse(network.toString()).toString() !== addr.toString()) {
    throw new Error(`${JSON.stringify(text)} has host bits set; did you mean ${canonicalText(network, bits)}?`);
  }
  return { family: ip.family, text: canonicalText(addr, bits), range: [addr, bits] };
}

function canonicalText(addr: ipaddr.IPv4 | ipaddr.IPv6, bits: number): string {
  const a = addr.kind() === 'ipv6' ? (addr as ipaddr.IPv6).toRFC5952String() : addr.toString();
  return `${a}/${bits}`;
}

function networkAddress(addr: ipaddr.IPv4 | ipaddr.IPv6, bits: number): ipaddr.IPv4 | ipaddr.IPv6 {
  const bytes = addr.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes);
}

/** Whether a canonical address lies inside a CIDR (families must agree; no implicit mapping). */
export function cidrContains(cidr: Cidr, address: string): boolean {
  const a = ipaddr.parse(address);
  if (a.kind() !== cidr.range[0].kind()) return false;
  return a.match(cidr.range as [ipaddr.IPv4, number]);
}

/**
 * The address a socket really talks to: an IPv4-mapped IPv6 address (::ffff:a.b.c.d, as dual-stack
 * sockets report IPv4 peers) is that IPv4 address. Takes and returns canonical text.
 */
export function unmapIpv4(address: string): string {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
  if (!m) return address;
  const hi = parseInt(m[1], 16);
  const lo = parseInt(m[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** A socket's remote address as the policy and the records see it: canonical, IPv4 peers as IPv4. */
export function canonicalPeer(raw: string): string {
  // Sockets report IPv4 peers in canonical dotted form already: skip the general parser on the hot path.
  if (isIPv4(raw)) return raw;
  if (raw.startsWith('::ffff:') && isIPv4(raw.slice(7))) return raw.slice(7);
  const ip = canonicalIp(raw);
  return ip ? unmapIpv4(ip.address) : raw;
}

/**
 * A client (source) address as written by a socket or a caller, canonical, IPv4-mapped peers as IPv4:
 * what the policy matches agents' `sources` against. null when not an address.
 */
export function sourceAddress(text: string): { address: string; family: IpFamily } | null {
  // Sockets report IPv4 peers in canonical dotted form, plain or IPv4-mapped: no parser needed.
  if (isCanonicalIpv4(text)) return { address: text, family: 4 };
  if (text.startsWith('::ffff:') && isCanonicalIpv4(text.slice(7))) return { address: text.slice(7), family: 4 };
  return sourceAddressFull(text);
}

/** sourceAddress without the fast paths: the reference they are tested against. */
export function sourceAddressFull(text: string): { address: string; family: IpFamily } | null {
  try {
    const a = ipaddr.parse(text);
    if (a.kind() === 'ipv4') return { address: a.toString(), family: 4 };
    const v6 = a as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return { address: v6.toIPv4Address().toString(), family: 4 };
    return { address: v6.toRFC5952String(), family: 6 };
  } catch {
    return null;
  }
}

/** An address's bytes (4 or 16) as 32-bit words, so prefix tests and IPv4 extraction are integer work. */
export function toWords(bytes: ArrayLike<number>): Uint32Array {
  const w = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < w.length; i++) {
    w[i] = ((bytes[i * 4] << 24) | (bytes[i * 4 + 1] << 16) | (bytes[i * 4 + 2] << 8) | bytes[i * 4 + 3]) >>> 0;
  }
  return w;
}

/**
 * The IPv4 an IPv6 address carries. `v4` is set when the form names exactly one IPv4 destination
 * (the address is judged as that IPv4); `candidates` lists every IPv4 it may carry (a deny rule for
 * any of them applies), which is more than one, and `v4` null, where the position is ambiguous:
 * Teredo carries its server and its (obfuscated) client; local-use NAT64 (RFC 8215) may use any
 * RFC 6052 prefix length, so each possible position is a candidate.
 */
export interface EmbeddedIpv4 {
  form: 'mapped' | 'siit' | 'nat64' | '6to4' | 'compatible' | 'teredo' | 'nat64-local';
  v4: number | null;
  candidates: number[];
}

/** Byte i of a 16-byte address held as four words. */
const byteAt = (w: Uint32Array, i: number): number => (w[i >> 2] >>> (24 - 8 * (i & 3))) & 0xff;
const v4Of = (w: Uint32Array, idx: readonly number[]): number =>
  ((byteAt(w, idx[0]) << 24) | (byteAt(w, idx[1]) << 16) | (byteAt(w, idx[2]) << 8) | byteAt(w, idx[3])) >>> 0;

/** RFC 6052 §2.2 positions of the IPv4 for prefix lengths /48, /56, /64 and /96 (bits 64-71 are skipped). */
const RFC6052_LOCAL = [
  [6, 7, 9, 10],
  [7, 9, 10, 11],
  [9, 10, 11, 12],
  [12, 13, 14, 15],
] as const;

/** Decode the IPv4 embedded in an IPv6 address (four words); null when it carries none (:: and ::1 carry none). */
export function embeddedIpv4(w: Uint32Array): EmbeddedIpv4 | null {
  if (w.length !== 4) return null;
  const [a, b, c, d] = w;
  const one = (form: EmbeddedIpv4['form'], v4: number): EmbeddedIpv4 => ({ form, v4, candidates: [v4] });
  if (a === 0 && b === 0) {
    if (c === 0xffff) return one('mapped', d);
    if (c === 0xffff0000) return one('siit', d);
    // ::/96 is the deprecated IPv4-compatible form, except :: and ::1, which are IPv6's own.
    if (c === 0 && d > 1) return one('compatible', d);
    return null;
  }
  if (a === 0x0064ff9b && b === 0 && c === 0) return one('nat64', d);
  if (a >>> 16 === 0x2002) return one('6to4', ((a << 16) | (b >>> 16)) >>> 0);
  if (a === 0x20010000) return { form: 'teredo', v4: null, candidates: [b, ~d >>> 0] };
  if (a === 0x0064ff9b && b >>> 16 === 0x0001) {
    return { form: 'nat64-local', v4: null, candidates: RFC6052_LOCAL.map((idx) => v4Of(w, idx)) };
  }
  return null;
}

/** uint32 to dotted quad. */
export function v4Text(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

