import { getDomain, getPublicSuffix } from 'tldts';
import { isMap, isSeq, parseDocument, type Document, YAMLMap, YAMLSeq } from 'yaml';
import type { DecisionRecord } from './record.js';
import type { Reason } from '../policy/vocabulary.js';
import { dropHostEntry } from './drop-hosts.js';
import { AddressGuard } from '../net/guard.js';
import { normalizeHost } from '../net/host.js';
import { canonicalIp } from '../net/ip.js';
import { compilePolicy, parsePolicyText, type CompiledPolicy } from '../policy/index.js';

/**
 * Records that may show a destination the policy is missing: denied for having no rule, or (in
 * report mode, or under a rule since removed) forwarded and then failed upstream, which says
 * nothing against the destination. Each is decided again against the current policy, and only
 * what that policy still denies for `no_rule` is proposed.
 */
const CANDIDATE = new Set<Reason>(['no_rule', 'rule_allow', 'dns_failure', 'upstream_error', 'upstream_timeout']);

/** Refusals that are the point of the policy or the guard: never turned into an allow rule. */
const NEVER: Partial<Record<Reason, string>> = {
  rule_deny: 'refused by a deny rule',
  private_address: 'refused by the address guard (private or special-purpose address)',
  address_not_allowed: "resolved outside the rule's CIDRs",
  method_not_allowed: "method not allowed by the host's rule",
};

/** Names that only ever mean something inside a network. */
const INTERNAL_SUFFIXES = ['localhost', 'local', 'internal', 'intranet', 'lan', 'home.arpa', 'corp', 'home', 'private', 'arpa'];

const EMPTY_POLICY = 'version: 1\nmode: enforce\nrules: []\n';

export interface CurrentPolicy {
  /** The policy file's text: kept as it is (comments, rules, denies, agents), additions appended. */
  text: string;
  file: string;
}

export interface SuggestOptions {
  /** The policy the records were made under. Without it, the suggestion starts from an empty policy. */
  current?: CurrentPolicy;
  /** Minimum distinct siblings before `*.parent` replaces them. Default 3. */
  minSiblings?: number;
  /** Shown in the header comment. */
  comment?: string;
}

export interface AddedRule {
  name: string;
  action: 'allow';
  hosts?: string[];
  cidrs?: string[];
  ports: number[];
  /** The agent whose rules it joins; null for the shared rules. */
  agent: string | null;
}

export interface SuggestResult {
  /** The whole policy: the current one with the added rules, each marked by a comment. */
  yaml: string;
  added: AddedRule[];
  /** Destinations seen but not proposed, with why. */
  skipped: { host: string; why: string }[];
  /** Known paste/file-drop/tunnel hosts an agent tried: listed for a human, never proposed. */
  flagged: { host: string; port: number; agent: string | null; entry: string }[];
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

/** The registrable domain (PSL, private suffixes included) a host or `*.` pattern belongs to. */
function registrableOf(host: string): string {
  return getDomain(host.replace(/^\*\./, ''), { allowPrivateDomains: true }) ?? host;
}

type Seen = Map<string, Set<number>>; // host or IP -> ports

/** Propose additions to the current policy from recorded decisions; the result always loads. */
export function suggestPolicy(records: Iterable<DecisionRecord>, opts: SuggestOptions = {}): SuggestResult {
  const current = opts.current ?? { text: EMPTY_POLICY, file: '<empty policy>' };
  const policy = compilePolicy(parsePolicyText(current.text, current.file));
  const agents = new Set(policy.spec.agents.map((a) => a.name));
  const names = new Map<string | null, Seen>();
  const ips = new Map<string | null, Seen>();
  const skipped = new Map<string, string>();
  const never = new Set<string>();
  const flagged = new Map<string, SuggestResult['flagged'][number]>();

  for (const r of records) {
    if (r.method === 'DNS' || r.port === null) continue; // DNS lookups say nothing about ports to allow
    const why = NEVER[r.reason];
    if (why) {
      never.add(r.host);
      skipped.set(r.host, r.rule ? `${why} (${r.rule})` : why);
      continue;
    }
    if (!CANDIDATE.has(r.reason)) continue; // malformed, unauthenticated, rate-limited: not a destination
    const agent = r.agent && agents.has(r.agent) ? r.agent : null;
    let host;
    try {
      host = normalizeHost(r.host);
    } catch {
      continue;
    }
    const d = policy.decide({ agent, host, port: r.port, method: r.method === 'CONNECT' ? undefined : r.method });
    if (d.reason === 'rule_deny') {
      never.add(r.host);
      skipped.set(r.host, `refused by a deny rule (${d.rule})`);
      continue;
    }
    if (d.reason !== 'no_rule') continue; // the current policy already allows it
    const entry = dropHostEntry(host.value);
    if (entry) {
      flagged.set(`${agent}|${host.value}|${r.port}`, { host: host.value, port: r.port, agent, entry });
      continue;
    }
    if (host.kind !== 'name') {
      if (!guard.check(host.value).ok && !exempted(policy, host.value)) {
        skipped.set(r.host, 'private or special-purpose address');
        continue;
      }
      add(ips, agent, host.value, r.port);
      continue;
    }
    if (internalName(host.value)) {
      skipped.set(r.host, 'internal name');
      continue;
    }
    // A name seen resolving to a private address is not suggested either (DNS rebinding, split horizon).
    const addr = r.address ? canonicalIp(r.address) : null;
    if (addr && !guard.check(addr.address).ok && !exempted(policy, addr.address)) {
      skipped.set(r.host, 'resolved to a private address');
      continue;
    }
    add(names, agent, host.value, r.port);
  }
  for (const h of never) for (const m of [...names.values(), ...ips.values()]) m.delete(h);
  for (const m of [...names.values(), ...ips.values()]) for (const h of m.keys()) skipped.delete(h);

  const added: AddedRule[] = [];
  for (const agent of new Set([...names.keys(), ...ips.keys()])) {
    added.push(...rulesFor(agent, names.get(agent) ?? new Map(), ips.get(agent) ?? new Map(), opts.minSiblings ?? 3));
  }
  const flaggedList = [...flagged.values()].sort((a, b) => a.host.localeCompare(b.host) || a.port - b.port);
  const yaml = render(current, policy, added, [...skipped].map(([host, why]) => ({ host, why })), flaggedList, opts.comment);
  verify(yaml, current.file, added);
  return { yaml, added, skipped: [...skipped].map(([host, why]) => ({ host, why })), flagged: flaggedList };
}

function exempted(policy: CompiledPolicy, address: string): boolean {
  return new AddressGuard({ exempt: policy.spec.guardExempt }).check(address).ok;
}

/** One rule per registrable domain and port set, so each rule is about one owner and its ports are exact. */
function rulesFor(agent: string | null, names: Seen, ips: Seen, minSiblings: number): AddedRule[] {
  // Siblings: a.x.example.com, b.x.example.com, c.x.example.com -> *.x.example.com.
  const byParent = new Map<string, string[]>();
  for (const h of names.keys()) {
    const parent = h.slice(h.indexOf('.') + 1);
    byParent.set(parent, [...(byParent.get(parent) ?? []), h]);
  }
  const entries = new Map<string, Set<number>>();
  for (const [parent, kids] of byParent) {
    if (kids.length >= minSiblings && safeGlobParent(parent)) entries.set(`*.${parent}`, new Set(kids.flatMap((k) => [...names.get(k)!])));
    else for (const k of kids) entries.set(k, names.get(k)!);
  }
  const groups = new Map<string, AddedRule>();
  const put = (key: string, label: string, ports: Set<number>, kind: 'hosts' | 'cidrs') => {
    const sorted = [...ports].sort((a, b) => a - b);
    const k = `${label}|${sorted.join(',')}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { name: `suggested-${label}${sorted.length === 1 && sorted[0] === 443 ? '' : `-${sorted.join('-')}`}`.slice(0, 60), action: 'allow', ports: sorted, agent }));
    (g[kind] ??= []).push(key);
  };
  for (const [h, ports] of entries) put(h, registrableOf(h), ports, 'hosts');
  for (const [a, ports] of ips) put(a.includes(':') ? `${a}/128` : `${a}/32`, 'addresses', ports, 'cidrs');
  const rules = [...groups.values()];
  for (const r of rules) {
    r.hosts?.sort();
    r.cidrs?.sort();
  }
  return rules.sort((a, b) => a.name.localeCompare(b.name));
}

function render(
  current: CurrentPolicy,
  policy: CompiledPolicy,
  added: AddedRule[],
  skipped: SuggestResult['skipped'],
  flagged: SuggestResult['flagged'],
  comment: string | undefined,
): string {
  const doc = parseDocument(current.text);
  const taken = new Set([...policy.spec.rules, ...policy.spec.agents.flatMap((a) => a.rules)].map((r) => r.name));
  for (const rule of added) {
    let name = rule.name;
    for (let i = 2; taken.has(name); i++) name = `${rule.name}-${i}`;
    taken.add(name);
    rule.name = name;
    const seq = rulesSeq(doc, rule.agent);
    const body = { name, action: rule.action, ...(rule.hosts ? { hosts: rule.hosts } : {}), ...(rule.cidrs ? { cidrs: rule.cidrs } : {}), ports: rule.ports };
    const node = doc.createNode(body) as YAMLMap;
    node.flow = false;
    node.commentBefore = ' added by policy suggest';
    seq.items.push(node);
  }
  const who = (a: string | null) => (a ? ` (agent ${a})` : '');
  const header = [
    `Suggested by \`agent-egress policy suggest\`, starting from ${current.file}: its rules, denies and agents are kept as they were.`,
    ...(comment ? [comment] : []),
    added.length
      ? `Added ${added.length} rule(s), each marked "added by policy suggest":`
      : 'Nothing to add: every destination the agents asked for is already allowed, denied by a rule, or listed below.',
    ...added.map((r) => `  + ${r.name}${who(r.agent)}: ${[...(r.hosts ?? []), ...(r.cidrs ?? [])].join(', ')} ports ${r.ports.join(',')}`),
    ...(flagged.length
      ? ['Known paste, file-drop or tunnel hosts an agent tried (NOT proposed; allow only if you mean to):', ...flagged.map((f) => `  ! ${f.host}:${f.port}${who(f.agent)} (${f.entry})`)]
      : []),
    ...(skipped.length ? ['Not proposed:', ...skipped.sort((a, b) => a.host.localeCompare(b.host)).map((s) => `  - ${s.host}: ${s.why}`)] : []),
    'Review before use: an agent trying a destination is not the same as needing it.',
  ];
  const mine = header.map((l) => ` ${l}`).join('\n');
  doc.commentBefore = doc.commentBefore ? `${mine}\n\n${doc.commentBefore}` : mine;
  return doc.toString({ lineWidth: 0 });
}

/** The `rules:` sequence of the shared rules or of one agent, created when missing. */
function rulesSeq(doc: Document, agent: string | null): YAMLSeq {
  let owner: YAMLMap = doc.contents as YAMLMap;
  if (agent !== null) {
    const list = doc.get('agents');
    owner = isSeq(list) ? (list.items.find((a) => isMap(a) && a.get('name') === agent) as YAMLMap) : owner;
  }
  let seq = owner.get('rules');
  if (!isSeq(seq)) {
    seq = new YAMLSeq();
    owner.set('rules', seq);
  }
  (seq as YAMLSeq).flow = false;
  return seq as YAMLSeq;
}

/** The suggestion must load and allow what it says it adds; anything else is a bug, not a suggestion. */
function verify(yaml: string, file: string, added: AddedRule[]): void {
  const p = compilePolicy(parsePolicyText(yaml, `${file} (suggested)`));
  for (const r of added) {
    for (const h of r.hosts ?? []) {
      const host = normalizeHost(h.replace(/^\*\./, 'x.'));
      for (const port of r.ports) {
        const d = p.decide({ agent: r.agent, host, port });
        if (d.reason !== 'rule_allow') throw new Error(`suggested rule ${r.name} does not allow ${h}:${port} (${d.reason})`);
      }
    }
  }
}

function add(m: Map<string | null, Seen>, agent: string | null, key: string, port: number): void {
  let seen = m.get(agent);
  if (!seen) m.set(agent, (seen = new Map()));
  let s = seen.get(key);
  if (!s) seen.set(key, (s = new Set()));
  s.add(port);
}
