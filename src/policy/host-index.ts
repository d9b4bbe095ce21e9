import micromatch from 'micromatch';
import ipaddr from 'ipaddr.js';
import { parseCidr, type IpFamily } from '../net/ip.js';

/**
 * Lookup structures for the policy's hot path. Built once per compile; a lookup touches only the
 * entries that can match the request (never a scan of every rule), so cost stays flat from ten
 * rules to a hundred thousand.
 */

interface Glob<T> {
  re: RegExp;
  item: T;
}

/**
 * Host patterns, by kind:
 *  - exact names: one Map lookup;
 *  - `*.suffix`: any depth below suffix, never the apex; found by walking the request's label suffixes;
 *  - other globs (`api-*.example.com`): grouped by the literal labels after the last label holding a
 *    `*`, so only globs sharing a suffix with the request are run; each `*` stays inside one label
 *    (dots are mapped to slashes so micromatch's `*` cannot cross them), a leading bare `*` label
 *    means one or more labels, as in `*.suffix`;
 *  - the bare `*`: every name.
 */
export class NameIndex<T> {
  private readonly exact = new Map<string, T[]>();
  private readonly suffix = new Map<string, T[]>();
  private readonly globs = new Map<string, Glob<T>[]>();
  private readonly star: T[] = [];

  /** `pattern` must already be normalised (normalizeHostPattern). */
  add(pattern: string, item: T): void {
    if (pattern === '*') {
      this.star.push(item);
      return;
    }
    const labels = pattern.split('.');
    let lastStar = -1;
    for (let i = 0; i < labels.length; i++) if (labels[i].includes('*')) lastStar = i;
    if (lastStar === -1) return push(this.exact, pattern, item);
    if (lastStar === 0 && labels[0] === '*') return push(this.suffix, labels.slice(1).join('.'), item);
    const key = labels.slice(lastStar + 1).join('.');
    const glob = labels[0] === '*' ? `*/**/${labels.slice(1).join('/')}` : labels.join('/');
    const re = micromatch.makeRe(glob, { dot: true, nocase: false });
    let list = this.globs.get(key);
    if (!list) this.globs.set(key, (list = []));
    list.push({ re, item });
  }

  /** Calls `visit` for every item whose pattern matches `name` (a normalised name, not an address). */
  lookup(name: string, visit: (item: T) => void): void {
    visitAll(this.exact.get(name), visit);
    let slashed: string | null = null;
    let dot = name.indexOf('.');
    while (dot !== -1) {
      const rest = name.slice(dot + 1);
      visitAll(this.suffix.get(rest), visit);
      const globs = this.globs.get(rest);
      if (globs) slashed = runGlobs(globs, slashed ?? name.replace(/\./g, '/'), visit);
      dot = name.indexOf('.', dot + 1);
    }
    const any = this.globs.get('');
    if (any) runGlobs(any, slashed ?? name.replace(/\./g, '/'), visit);
    visitAll(this.star, visit);
  }
}

function runGlobs<T>(globs: Glob<T>[], slashed: string, visit: (item: T) => void): string {
  for (let i = 0; i < globs.length; i++) if (globs[i].re.test(slashed)) visit(globs[i].item);
  return slashed;
}

function visitAll<T>(list: T[] | undefined, visit: (item: T) => void): void {
  if (list === undefined) return;
  for (let i = 0; i < list.length; i++) visit(list[i]);
}

function push<K, T>(m: Map<K, T[]>, k: K, item: T): void {
  const list = m.get(k);
  if (list) list.push(item);
  else m.set(k, [item]);
}

/**
 * CIDRs, bucketed by family and prefix length: a lookup masks the address once per distinct prefix
 * length present (at most 33 or 129) and does one Map lookup each, whatever the number of CIDRs.
 */
export class CidrIndex<T> {
  private readonly v4 = new Map<number, Map<number, T[]>>();
  private readonly v6 = new Map<number, Map<string, T[]>>();
  private v4Lengths: number[] = [];
  private v6Lengths: number[] = [];

  get size(): number {
    return this.v4.size + this.v6.size;
  }

  /** `cidr` in canonical text (parseCidr output). */
  add(cidr: string, item: T): void {
    const c = parseCidr(cidr);
    const bytes = c.range[0].toByteArray();
    const bits = c.range[1];
    if (c.family === 4) {
      let m = this.v4.get(bits);
      if (!m) {
        this.v4.set(bits, (m = new Map()));
        this.v4Lengths = [...this.v4.keys()].sort((a, b) => b - a);
      }
      push(m, mask4(bytesToU32(bytes), bits), item);
    } else {
      let m = this.v6.get(bits);
      if (!m) {
        this.v6.set(bits, (m = new Map()));
        this.v6Lengths = [...this.v6.keys()].sort((a, b) => b - a);
      }
      push(m, key6(bytes, bits), item);
    }
  }

  /** Calls `visit` for every item whose CIDR contains `address` (canonical text of the given family). */
  lookup(address: string, family: IpFamily, visit: (item: T) => void): void {
    if (family === 4) {
      if (this.v4.size === 0) return;
      const a = parseV4(address);
      if (a === null) return;
      for (const bits of this.v4Lengths) visitAll(this.v4.get(bits)!.get(mask4(a, bits)), visit);
      return;
    }
    if (this.v6.size === 0) return;
    let bytes: number[];
    try {
      bytes = ipaddr.IPv6.parse(address).toByteArray();
    } catch {
      return;
    }
    for (const bits of this.v6Lengths) visitAll(this.v6.get(bits)!.get(key6(bytes, bits)), visit);
  }
}

function bytesToU32(b: number[]): number {
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

function mask4(a: number, bits: number): number {
  return bits === 0 ? 0 : (a & (0xffffffff << (32 - bits))) >>> 0;
}

function key6(bytes: number[], bits: number): string {
  let s = '';
  for (let i = 0; i < 16 && i * 8 < bits; i++) {
    const keep = Math.min(8, bits - i * 8);
    s += ((bytes[i] & ((0xff << (8 - keep)) & 0xff)) | 0x100).toString(16);
  }
  return s;
}

/** Dotted quad to uint32 without allocating; null when not a canonical dotted quad. */
export function parseV4(s: string): number | null {
  let acc = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i === s.length ? 46 : s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return null;
      acc = acc * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3) return null;
    } else return null;
  }
  return parts === 4 ? acc >>> 0 : null;
}
