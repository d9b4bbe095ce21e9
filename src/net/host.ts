import { domainToASCII } from 'node:url';
import { canonicalIp, isCanonicalIpv4, unmapIpv4, type IpFamily } from './ip.js';

/**
 * A destination host in its one canonical form. Names: lower-case, punycode, no trailing dot.
 * Addresses: canonical IP text (see canonicalIp). The two kinds never mix: an address only ever
 * matches CIDR rules, a name only host rules.
 */
export type NormalizedHost =
  | { kind: 'name'; value: string }
  | { kind: 'ip'; family: IpFamily; value: string };

export class HostError extends Error {
  override name = 'HostError';
}

const MAX_NAME = 253;
const MAX_LABEL = 63;
// Letters, digits, hyphen; underscore too, since real names (service records, some buckets) carry it.
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;
const PATTERN_LABEL = /^[a-z0-9_*](?:[a-z0-9_*-]*[a-z0-9_*])?$/;
// Anything that can smuggle a second meaning into a host: authority, path, query, fragment, escapes, space.
const FORBIDDEN = /[\s@/\\?#%:[\]<>^|"'`{}]/;

/**
 * Normalise a host as written in a request target, a Host header, a CLI argument or a policy entry.
 * IP literals in every spelling (2130706433, 0x7f.1, 127.1, 0177.0.0.1, [v6%zone], ::ffff:a.b.c.d)
 * become one canonical address; names become lower-case punycode without one trailing dot.
 * Throws HostError for anything a host cannot be.
 */
export function normalizeHost(input: string): NormalizedHost {
  // Fast paths for the two shapes almost every request carries; anything else takes the full path.
  // Each answers only where the full path provably answers the same (test/unit/net-fast-paths.test.ts).
  if (isCanonicalIpv4(input)) return { kind: 'ip', family: 4, value: input };
  const name = plainName(input);
  if (name !== null) return { kind: 'name', value: name };
  return normalizeHostFull(input);
}

/**
 * An ASCII letter-digit-hyphen(-underscore) name with valid labels and at most one trailing dot, whose
 * last label cannot be read as a number: returned lower-case without the dot, exactly as the full path
 * returns it. null for anything else (IP-like, IDNA, bad labels), which the full path then judges.
 */
function plainName(input: string): string | null {
  let n = input.length;
  if (n === 0 || n > MAX_NAME + 1) return null;
  if (input.charCodeAt(n - 1) === 46) n--;
  if (n === 0 || n > MAX_NAME) return null;
  let upperSeen = false;
  let labelStart = 0;
  for (let i = 0; i <= n; i++) {
    const c = i === n ? 46 : input.charCodeAt(i);
    if (c === 46) {
      const len = i - labelStart;
      if (len === 0 || len > MAX_LABEL) return null;
      if (input.charCodeAt(labelStart) === 45 || input.charCodeAt(i - 1) === 45) return null;
      labelStart = i + 1;
    } else if (c >= 65 && c <= 90) {
      upperSeen = true;
    } else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95)) {
      return null;
    }
  }
  // The full path reads a last label of digits or 0x-hex as IPv4; leave all of those to it.
  let start = n - 1;
  while (start > 0 && input.charCodeAt(start - 1) !== 46) start--;
  if (numericLabel(input, start, n)) return null;
  const name = n === input.length ? input : input.slice(0, n);
  return upperSeen ? name.toLowerCase() : name;
}

/** /^(?:0x[0-9a-f]*|\d+)$/i over input[start, end), without a slice. */
function numericLabel(s: string, start: number, end: number): boolean {
  let allDigits = true;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) allDigits = false;
  }
  if (allDigits) return true;
  if (end - start < 2 || s.charCodeAt(start) !== 48 || (s.charCodeAt(start + 1) | 32) !== 120) return false;
  for (let i = start + 2; i < end; i++) {
    const c = s.charCodeAt(i) | 32;
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/** normalizeHost without the fast paths: the reference they are tested against. */
export function normalizeHostFull(input: string): NormalizedHost {
  if (input.length === 0) throw new HostError('empty host');
  if (input.length > 1024) throw new HostError('host too long');
  if (input.startsWith('[')) {
    if (!input.endsWith(']')) throw new HostError('unterminated IPv6 literal');
    const ip = canonicalIp(input.slice(1, -1).replace(/%25/i, '%'));
    if (!ip || ip.family !== 6) throw new HostError('bad IPv6 literal');
    return ipv6Host(ip.address);
  }
  if (input.includes(':')) {
    // A bare IPv6 literal (policy entries, the `check` command); never a name.
    const ip = canonicalIp(input);
    if (!ip || ip.family !== 6) throw new HostError('a host cannot contain ":" (bracket IPv6 literals)');
    return ipv6Host(ip.address);
  }
  if (FORBIDDEN.test(input)) throw new HostError('host contains a character a host name cannot have');
  let name = input;
  // IDNA mapping first: full-width digits and ideographic dots (`１２７。０。０。１`) map to an IPv4
  // literal, which must be judged as an address, never slip through as a name.
  if (!/^[\x21-\x7e]*$/.test(name)) {
    const ascii = domainToASCII(name);
    if (!ascii) throw new HostError('invalid internationalised name');
    name = ascii;
    if (FORBIDDEN.test(name)) throw new HostError('host contains a character a host name cannot have');
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0) throw new HostError('empty host');
  // WHATWG's IPv4 parser: if the last label is numeric, the whole host must be an IPv4 address
  // (decimal, octal, hex, short forms) — exactly how curl, browsers and undici read it.
  const labels = name.split('.');
  const last = labels[labels.length - 1];
  if (/^(?:0x[0-9a-f]*|\d+)$/i.test(last)) {
    let url: URL;
    try {
      url = new URL(`http://${name}/`);
    } catch {
      throw new HostError('host looks like an IPv4 address but is not a valid one');
    }
    const ip = canonicalIp(url.hostname);
    if (!ip || ip.family !== 4) throw new HostError('bad IPv4 literal');
    return { kind: 'ip', family: 4, value: ip.address };
  }
  name = name.toLowerCase();
  checkName(name, LABEL);
  return { kind: 'name', value: name };
}

/**
 * Normalise a host pattern from a policy or a flag: the same rules as normalizeHost, with `*` allowed
 * inside labels. A pattern without `*` is returned exactly as normalizeHost would return it, so a
 * pattern and a request spelled differently still meet.
 */
export function normalizeHostPattern(input: string): NormalizedHost {
  if (input === '*') return { kind: 'name', value: '*' };
  if (!input.includes('*')) return normalizeHost(input);
  if (FORBIDDEN.test(input)) throw new HostError('pattern contains a character a host name cannot have');
  let name = input.endsWith('.') ? input.slice(0, -1) : input;
  const labels = name.split('.').map((l) => {
    if (l.includes('*') || /^[\x21-\x7e]*$/.test(l)) return l.toLowerCase();
    const ascii = domainToASCII(l);
    if (!ascii) throw new HostError(`invalid internationalised label ${JSON.stringify(l)}`);
    return ascii;
  });
  name = labels.join('.');
  checkName(name, PATTERN_LABEL);
  return { kind: 'name', value: name };
}

/**
 * An IPv4-mapped literal (::ffff:a.b.c.d) is the IPv4 host itself (the socket layer connects to a.b.c.d),
 * so it becomes that IPv4 address and meets IPv4 CIDR rules. NAT64 and 6to4 forms are real IPv6
 * destinations and stay IPv6 (the guard judges their embedded IPv4).
 */
function ipv6Host(address: string): NormalizedHost {
  const v4 = unmapIpv4(address);
  return v4 !== address ? { kind: 'ip', family: 4, value: v4 } : { kind: 'ip', family: 6, value: address };
}

function checkName(name: string, labelRe: RegExp): void {
  if (name.length > MAX_NAME) throw new HostError('name longer than 253 characters');
  for (const label of name.split('.')) {
    if (label.length === 0) throw new HostError('empty label in name');
    if (label.length > MAX_LABEL) throw new HostError('label longer than 63 characters');
    // No echo of the label: this message can reach a client, and the input is attacker-chosen.
    if (!labelRe.test(label)) throw new HostError('a label has a character a host name cannot have');
  }
}

/** Text form for records and messages: IPv6 in brackets when with a port. */
export function hostText(h: NormalizedHost): string {
  return h.value;
}
