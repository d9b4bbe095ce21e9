import { getDomain, getPublicSuffix } from 'tldts';
import { stringify } from 'yaml';
import type { DecisionRecord, Reason } from './record.js';
import { AddressGuard } from '../net/guard.js';
import { canonicalIp } from '../net/ip.js';

/**
 * Reasons whose destination is worth allowing: the agent really tried to reach it and the policy (or
 * the upstream) was the only obstacle. Refusals for malformed input, auth, rate limits and the
 * address guard are never turned into allow rules; explicit deny-rule hits stay denied.
 */
const SUGGESTIBLE = new Set<Reason>(['rule_allow', 'no_rule', 'address_not_allowed', 'method_not_allowed', 'upstream_error', 'upstream_timeout', 'limit_exceeded']);

/** Names that only ever mean something inside a network. */
const INTERNAL_SUFFIXES = ['localhost', 'local', 'internal', 'intranet', 'lan', 'home.arpa', 'corp', 'home', 'private', 'arpa'];

export interface SuggestOptions {
  /** Minimum distinct siblings before `*.parent` replaces them. Default 3. */
  minSiblings?: number;
  /** Shown in the header comment. */
  comment?: string;
}

export interface SuggestResult {
  yaml: string;
  rules: { name: string; action: 'allow'; hosts?: string[]; cidrs?: string[]; ports: (number | string)[] }[];
  skipped: { host: string; why: string }[];
}

const guard = new AddressGuard();

function internalName(host: string): boolean {
  if (!host.includes('.')) return true; // single-label names resolve via search domains: internal
  return INTERNAL_SUFFIXES.some((s) => host === s || host.endsWith(`.${s}`));
}

/**
 * Whether `*.parent` is a safe glob: parent must be at or below a registrable domain (never a public
 * suffix such as com, co.uk or github.io, where siblings belong to different owners) and have at
 * least two labels.
 */
export function safeGlobParent(parent: string): boolean {
  if (parent.split('.').length < 2) return false;
  const opts = { allowPrivateDomains: true };
  const registrable = getDomain(parent, opts);
  if (!registrable) return false;
  if (getPublicSuffix(parent, opts) === parent) return false;
  return parent === registrable || parent.endsWith(`.${registrable}`);
}

/** Build an allowlist policy from observed decisions. */
export function suggestPolicy(records: Iterable<DecisionRecord>, opts: SuggestOptions = {}): SuggestResult {
  const minSiblings = opts.minSiblings ?? 3;
  const names = new Map<string, Set<number>>();
  const ips = new Map<string, Set<number>>();
  const skipped = new Map<string, string>();
  for (const r of records) {
    if (r.method === 'DNS' || r.port === null) continue; // DNS lookups say nothing about ports to allow
    if (!SUGGESTIBLE.has(r.reason)) {
      if (r.reason === 'private_address' || r.reason === 'rule_deny') skipped.set(r.host, r.reason);
      continue;
    }
    const ip = canonicalIp(r.host);
    if (ip) {
      if (!guard.check(ip.address).ok) {
        skipped.set(r.host, 'private or special-purpose address');
        continue;
      }
      add(ips, ip.address, r.port);
      continue;
    }
    if (internalName(r.host)) {
      skipped.set(r.host, 'internal name');
      continue;
    }
    // A name seen resolving to a private address is not suggested either (DNS rebinding, split horizon).
    if (r.address && canonicalIp(r.address) && !guard.check(canonicalIp(r.address)!.address).ok) {
      skipped.set(r.host, 'resolved to a private address');
      continue;
    }
    add(names, r.host, r.port);
  }
  for (const h of [...names.keys(), ...ips.keys()]) skipped.delete(h);

  // Group siblings: a.x.example.com, b.x.example.com, c.x.example.com -> *.x.example.com.
  const byParent = new Map<string, string[]>();
  for (const h of names.keys()) {
    const dot = h.indexOf('.');
    const parent = h.slice(dot + 1);
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent)!.push(h);
  }
  const entries = new Map<string, Set<number>>(); // host pattern -> ports
  for (const [parent, kids] of byParent) {
    if (kids.length >= minSiblings && safeGlobParent(parent)) {
      const ports = new Set<number>();
      for (const k of kids) for (const p of names.get(k)!) ports.add(p);
      entries.set(`*.${parent}`, ports);
    } else for (const k of kids) entries.set(k, names.get(k)!);
  }

  // One rule per distinct port set keeps the file short and each rule's ports exact.
  const groups = new Map<string, { hosts: string[]; cidrs: string[]; ports: number[] }>();
  const put = (key: string, ports: Set<number>, kind: 'hosts' | 'cidrs') => {
    const sorted = [...ports].sort((a, b) => a - b);
    const k = sorted.join(',');
    if (!groups.has(k)) groups.set(k, { hosts: [], cidrs: [], ports: sorted });
    groups.get(k)![kind].push(key);
  };
  for (const [h, ports] of entries) put(h, ports, 'hosts');
  for (const [a, ports] of ips) put(a.includes(':') ? `${a}/128` : `${a}/32`, ports, 'cidrs');

  const rules: SuggestResult['rules'] = [...groups.values()]
    .sort((a, b) => a.ports[0] - b.ports[0] || a.ports.length - b.ports.length)
    .map((g) => ({
      name: `observed-${g.ports.join('-')}`.slice(0, 60),
      action: 'allow' as const,
      ...(g.hosts.length ? { hosts: g.hosts.sort() } : {}),
      ...(g.cidrs.length ? { cidrs: g.cidrs.sort() } : {}),
      ports: g.ports,
    }));
  const header = [
    'Suggested by `agent-egress policy suggest` from recorded decisions.',
    ...(opts.comment ? [opts.comment] : []),
    'Review before use: every entry below was reached (or tried) by an agent, which is not the same as needed.',
    ...(skipped.size ? ['Not suggested:', ...[...skipped].sort().map(([h, why]) => `  ${h}: ${why}`)] : []),
  ];
  const body = stringify({ version: 1, mode: 'enforce', rules }, { lineWidth: 0 });
  const yaml = header.map((l) => `# ${l}`).join('\n') + '\n' + body;
  return { yaml, rules, skipped: [...skipped].map(([host, why]) => ({ host, why })) };
}

function add(m: Map<string, Set<number>>, key: string, port: number): void {
  let s = m.get(key);
  if (!s) m.set(key, (s = new Set()));
  s.add(port);
}
