import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { canonicalIp, embeddedIpv4, parseCidr, parseIp, toWords, v4Text } from './ip.js';

/** range: a short code naming why, e.g. 'loopback', 'mapped:private', 'metadata', 'self', 'invalid'. */
export type GuardResult = { ok: true } | { ok: false; range: string };

export interface GuardOptions {
  /** CIDRs the policy exempts explicitly (--allow-address, address_guard.exempt). */
  exempt?: string[];
  /** The proxy's own listeners (proxy, admin, DNS); address may be 0.0.0.0 / ::. */
  self?: { address: string; port: number }[];
}

/** An address as 32-bit words (1 for IPv4, 4 for IPv6), so a prefix test is a few integer compares. */
type Words = Uint32Array;

interface Prefix {
  words: Words;
  bits: number;
}

interface Range extends Prefix {
  code: string;
}

function inPrefix(addr: Words, p: Prefix): boolean {
  if (addr.length !== p.words.length) return false;
  let left = p.bits;
  for (let i = 0; i < addr.length && left > 0; i++) {
    const take = left >= 32 ? 32 : left;
    const mask = take === 32 ? 0xffffffff : ~(0xffffffff >>> take) >>> 0;
    if (((addr[i] & mask) >>> 0) !== ((p.words[i] & mask) >>> 0)) return false;
    left -= take;
  }
  return true;
}

function prefix(cidr: string): Prefix {
  const c = parseCidr(cidr);
  return { words: toWords(c.range[0].toByteArray()), bits: c.range[1] };
}

function ranges(list: [string, string][]): Range[] {
  return list.map(([cidr, code]) => ({ ...prefix(cidr), code }));
}

// First match wins, so the specific codes (metadata, broadcast) precede the blocks that contain them.
const METADATA_V4 = ['169.254.169.254', '169.254.170.2', '168.63.129.16', '100.100.100.200', '192.0.0.192'];
const METADATA_V6 = ['fd00:ec2::254'];

const V4: Range[] = ranges([
  ...METADATA_V4.map((a): [string, string] => [`${a}/32`, 'metadata']),
  ['255.255.255.255/32', 'broadcast'],
  ['0.0.0.0/8', 'this-network'],
  ['10.0.0.0/8', 'private'],
  ['172.16.0.0/12', 'private'],
  ['192.168.0.0/16', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['192.0.0.0/24', 'ietf-protocol'],
  ['192.0.2.0/24', 'documentation'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['198.18.0.0/15', 'benchmarking'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
]);

const V6: Range[] = ranges([
  ...METADATA_V6.map((a): [string, string] => [`${a}/128`, 'metadata']),
  ['64:ff9b:1::/48', 'nat64-local'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['fc00::/7', 'unique-local'],
  ['ff00::/8', 'multicast'],
  ['2001:db8::/32', 'documentation'],
  ['3fff::/20', 'documentation'],
  ['100::/64', 'discard'],
  ['2001::/32', 'teredo'],
  ['2001::/23', 'ietf-protocol'],
]);

// Global unicast is 2000::/3; everything else left after the specific ranges (and the embedded-IPv4
// forms, judged first) is unallocated or special-purpose, and no public service lives there.
const V6_GLOBAL = prefix('2000::/3');

const V6_UNSPECIFIED = toWords(ipaddr.parse('::').toByteArray());
const V6_LOOPBACK = toWords(ipaddr.parse('::1').toByteArray());

function equalWords(a: Words, b: Words): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function matchRange(list: Range[], w: Words): Range | null {
  for (const r of list) if (inPrefix(w, r)) return r;
  return null;
}

const WILDCARDS = new Set(['0.0.0.0', '::']);
const LOOPBACK4 = prefix('127.0.0.0/8');

/**
 * The SSRF guard: refuses addresses an agent must not reach (private, loopback, link-local, metadata,
 * special-purpose ranges, IPv4 hidden in IPv6) and the proxy's own listeners. Built once per policy;
 * check() does no parsing of ranges, only integer compares.
 */
export class AddressGuard {
  private readonly exempt4: Prefix[] = [];
  private readonly exempt6: Prefix[] = [];
  /** "address|port" of every listener bound to one address. */
  private readonly selfKeys = new Set<string>();
  /** Ports of listeners bound to 0.0.0.0 / ::, which answer on every local address. */
  private readonly wildcardPorts = new Set<number>();
  /** Ports of every listener: 0.0.0.0 / :: as a destination means "this host", whatever the bind address. */
  private readonly allPorts = new Set<number>();
  private local: Set<string> = new Set();

  constructor(opts: GuardOptions = {}) {
    for (const text of opts.exempt ?? []) {
      const c = parseCidr(text);
      const p: Prefix = { words: toWords(c.range[0].toByteArray()), bits: c.range[1] };
      (c.family === 4 ? this.exempt4 : this.exempt6).push(p);
    }
    for (const l of opts.self ?? []) {
      const ip = canonicalIp(l.address);
      if (!ip) throw new Error(`listener address is not an IP address: ${JSON.stringify(l.address)}`);
      // A wildcard listener answers on every local address (a `::` socket is dual-stack by default,
      // and so is treated as covering IPv4 too).
      this.allPorts.add(l.port);
      if (WILDCARDS.has(ip.address)) this.wildcardPorts.add(l.port);
      else this.selfKeys.add(`${ip.address}|${l.port}`);
    }
    if (this.wildcardPorts.size > 0) this.local = localAddresses();
  }

  /**
   * Judge an address (canonical IP text) and, when given, the port it would be reached on. Without a
   * port only the ranges are judged: the listener check needs a port to mean anything.
   */
  check(address: string, port?: number): GuardResult {
    const ip = parseAddress(address);
    if (!ip) return { ok: false, range: 'invalid' };
    const w = ip.words;
    const embedded = ip.family === 6 ? this.embedded(w) : null;
    if (port !== undefined && this.isSelf(ip.address, w, embedded, port)) return { ok: false, range: 'self' };
    if (ip.family === 4) return this.judge4(w);
    if (equalWords(w, V6_UNSPECIFIED)) return { ok: false, range: 'unspecified' };
    if (equalWords(w, V6_LOOPBACK)) return this.exempted(this.exempt6, w, 'loopback');
    if (embedded) {
      const inner = this.judge4(Uint32Array.of(embedded.v4));
      return inner.ok ? inner : { ok: false, range: `${embedded.label}:${inner.range}` };
    }
    const r = matchRange(V6, w);
    if (r) {
      const res = this.exempted(this.exempt6, w, r.code);
      return res.ok ? this.ambiguousMetadata(w) : res;
    }
    if (!inPrefix(w, V6_GLOBAL)) return this.exempted(this.exempt6, w, 'reserved');
    return { ok: true };
  }

  /**
   * The one IPv4 an IPv6 address reaches (the same decoder the policy's CIDR rules use). Teredo and
   * local-use NAT64, whose IPv4 is ambiguous, are not unwrapped: their whole ranges are refused.
   */
  private embedded(w: Words): { label: string; v4: number } | null {
    const e = embeddedIpv4(w);
    return e !== null && e.v4 !== null ? { label: e.form, v4: e.v4 } : null;
  }

  /**
   * An exempted Teredo or local-use NAT64 range still never reaches a metadata address through any IPv4
   * the address may carry: exempting a /32 of tunnels must not hand out the credentials endpoint.
   */
  private ambiguousMetadata(w: Words): GuardResult {
    const e = embeddedIpv4(w);
    if (e === null || e.v4 !== null) return { ok: true };
    for (const n of e.candidates) {
      const inner = this.judge4(Uint32Array.of(n));
      if (!inner.ok && inner.range === 'metadata') return { ok: false, range: `${e.form}:metadata` };
    }
    return { ok: true };
  }

  private judge4(w: Words): GuardResult {
    const r = matchRange(V4, w);
    if (!r) return { ok: true };
    return this.exempted(this.exempt4, w, r.code);
  }

  /**
   * Whether an explicit exemption lets a refused address through. A metadata address needs a narrow
   * exemption (at least /16 for IPv4, /64 for IPv6): a sweeping `0.0.0.0/0` or `::/0`, written to reach
   * "everything", must not silently hand an agent the cloud credentials endpoint.
   */
  private exempted(list: Prefix[], w: Words, code: string): GuardResult {
    const minBits = code === 'metadata' ? (w.length === 1 ? 16 : 64) : 0;
    for (const p of list) if (p.bits >= minBits && inPrefix(w, p)) return { ok: true };
    return { ok: false, range: code };
  }

  /** The address itself and, for IPv4 hidden in IPv6, the IPv4 too (a mapped address reaches the IPv4 socket). */
  private isSelf(address: string, w: Words, embedded: { v4: number } | null, port: number): boolean {
    if (!this.allPorts.has(port)) return false;
    const v4 = embedded === null ? null : v4Text(embedded.v4);
    if (WILDCARDS.has(address) || v4 === '0.0.0.0') return true;
    if (this.selfKeys.has(`${address}|${port}`)) return true;
    if (v4 !== null && this.selfKeys.has(`${v4}|${port}`)) return true;
    if (!this.wildcardPorts.has(port)) return false;
    if (this.local.has(address) || (v4 !== null && this.local.has(v4))) return true;
    // All of 127/8 reaches a wildcard listener, not just 127.0.0.1.
    if (w.length === 1) return inPrefix(w, LOOPBACK4);
    return embedded !== null && inPrefix(Uint32Array.of(embedded.v4), LOOPBACK4);
  }
}

// Canonical dotted quad (no leading zeros): the common case, read without going through ipaddr.js.
const DOTTED = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseAddress(text: string): { family: 4 | 6; address: string; words: Words } | null {
  const m = DOTTED.exec(text);
  if (m) {
    const n = ((+m[1] << 24) | (+m[2] << 16) | (+m[3] << 8) | +m[4]) >>> 0;
    return { family: 4, address: text, words: Uint32Array.of(n) };
  }
  const ip = parseIp(text);
  if (!ip) return null;
  return { family: ip.family, address: ip.address, words: toWords(ip.bytes) };
}

/** Every address of this host that a wildcard listener answers on, canonical, plus loopback and the wildcards. */
function localAddresses(): Set<string> {
  const out = new Set<string>(['127.0.0.1', '::1', '0.0.0.0', '::']);
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) {
      const ip = canonicalIp(info.address);
      if (ip) out.add(ip.address);
    }
  }
  return out;
}
