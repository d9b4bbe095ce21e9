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
  const ip = parseIp(text);
  return ip && { family: ip.family, address: ip.address };
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
