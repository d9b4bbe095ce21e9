import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { parsePolicyText } from '../policy/load.js';
import { policyHash } from '../policy/compile.js';
import { PolicyError, type PolicySpec, type RuleSpec } from '../policy/types.js';
import type { Grant } from './types.js';

/**
 * The grants file: YAML in the policy format (version, rules, agents[].rules), holding only allow rules,
 * one per "always" grant. Pure: parse, edit and merge; grant-store.ts does the I/O.
 */

/** The rules a set of grants adds to the policy: shared (everyone) and per agent. */
export interface GrantRules {
  shared: RuleSpec[];
  agents: Map<string, RuleSpec[]>;
}

export interface ParsedGrants {
  grants: Grant[];
  rules: GrantRules;
}

const ALLOWED_TOP = new Set(['version', 'rules', 'agents']);
const ALLOWED_AGENT = new Set(['name', 'rules']);
const GRANT_PREFIX = 'grant:';

/** Parse and validate a grants file's text; a bad edit is a PolicyError with file and line, like a policy. */
export function parseGrantsText(text: string, file: string): ParsedGrants {
  const spec = parsePolicyText(text, file);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const errors: PolicyError['errors'] = [];
  const at = (node: { range?: [number, number, number] | null } | null | undefined, message: string): void => {
    const { line, col } = lines.linePos(node?.range?.[0] ?? 0);
    errors.push({ file, line, column: col, message });
  };
  const root = doc.contents;
  if (isMap(root)) {
    for (const pair of root.items) {
      const k = String((pair.key as { value?: unknown })?.value);
      if (!ALLOWED_TOP.has(k)) at(pair.key as never, `${k}: a grants file holds only version, rules and agents[].rules`);
    }
    const agents = root.get('agents', true);
    if (isSeq(agents)) {
      for (const a of agents.items) {
        if (!isMap(a)) continue;
        for (const pair of a.items) {
          const k = String((pair.key as { value?: unknown })?.value);
          if (!ALLOWED_AGENT.has(k)) at(pair.key as never, `agents.${k}: an agent in a grants file has only a name and rules (identities stay in the policy)`);
        }
      }
    }
  }
  const check = (r: RuleSpec): void => {
    if (r.action !== 'allow') errors.push({ file, line: r.pos.line, column: 1, message: `rule ${r.name}: a grants file holds allow rules only` });
    else if (r.inspect || r.secrets.length || r.setHeaders.length) errors.push({ file, line: r.pos.line, column: 1, message: `rule ${r.name}: a grant cannot inspect, broker secrets or set headers` });
  };
  spec.rules.forEach(check);
  for (const a of spec.agents) a.rules.forEach(check);
  if (errors.length) throw new PolicyError(errors.sort((a, b) => a.line - b.line));

  const data = (doc.toJS() ?? {}) as { rules?: RawRule[]; agents?: { name?: string; rules?: RawRule[] }[] };
  const grants: Grant[] = [];
  spec.rules.forEach((r, i) => grants.push(grantOf(r, null, data.rules?.[i]?.granted)));
  const agents = new Map<string, RuleSpec[]>();
  spec.agents.forEach((a, i) => {
    agents.set(a.name, [...(agents.get(a.name) ?? []), ...a.rules]);
    a.rules.forEach((r, j) => grants.push(grantOf(r, a.name, data.agents?.[i]?.rules?.[j]?.granted)));
  });
  return { grants, rules: { shared: spec.rules, agents } };
}

interface RawRule {
  granted?: { by?: string; at?: string; approval?: string };
}

function grantOf(r: RuleSpec, agent: string | null, meta: RawRule['granted']): Grant {
  const id = r.name.startsWith(GRANT_PREFIX) ? r.name.slice(GRANT_PREFIX.length) : r.name;
  const host = [...r.hosts, ...r.cidrs.map((c) => c.replace(/\/(32|128)$/, ''))].join(', ');
  return {
    id,
    agent,
    host,
    port: r.ports && r.ports.length === 1 && r.ports[0][0] === r.ports[0][1] ? r.ports[0][0] : null,
    expiresAt: null,
    always: true,
    by: meta?.by ?? 'grants file',
    createdAt: meta?.at ?? '',
    approval: meta?.approval ?? null,
    rule: r.name,
  };
}

/** The rule a grant is: allow host (or the address) on its port, nothing more. */
export function grantRule(g: Pick<Grant, 'id' | 'host' | 'port'>, pos = { file: '<grants>', line: 0 }): RuleSpec {
  const ip = g.host.includes(':') || /^\d+\.\d+\.\d+\.\d+$/.test(g.host);
  return {
    name: `${GRANT_PREFIX}${g.id}`,
    action: 'allow',
    hosts: ip ? [] : [g.host],
    cidrs: ip ? [`${g.host}/${g.host.includes(':') ? 128 : 32}`] : [],
    ports: g.port === null ? null : [[g.port, g.port]],
    methods: null,
    dnsTypes: null,
    request: { paths: null, query: null, matchHeaders: null },
    inspect: false,
    secrets: [],
    setHeaders: [],
    protocols: null,
    pos,
  };
}

/** The file's text with one more grant (comments and other entries kept), or a new file. */
export function addGrantText(text: string | null, g: Grant): string {
  const doc: Document = text && text.trim() ? parseDocument(text) : parseDocument('version: 1\n');
  if (!isMap(doc.contents)) throw new Error('the grants file is not a mapping');
  const r = grantRule(g);
  const entry: Record<string, unknown> = { name: r.name, action: 'allow' };
  if (r.hosts.length) entry.hosts = r.hosts;
  if (r.cidrs.length) entry.cidrs = r.cidrs;
  if (g.port !== null) entry.ports = [g.port];
  entry.granted = { by: g.by, at: g.createdAt, ...(g.approval ? { approval: g.approval } : {}) };
  if (g.agent === null) {
    if (!doc.has('rules')) doc.set('rules', doc.createNode([]));
    (doc.get('rules') as { add(v: unknown): void }).add(doc.createNode(entry));
  } else {
    if (!doc.has('agents')) doc.set('agents', doc.createNode([]));
    const agents = doc.get('agents');
    if (!isSeq(agents)) throw new Error('agents in the grants file is not a list');
    let a = agents.items.find((x) => isMap(x) && x.get('name') === g.agent);
    if (!a) {
      a = doc.createNode({ name: g.agent, rules: [] });
      agents.add(a);
    }
    if (!isMap(a)) throw new Error('an agent in the grants file is not a mapping');
    if (!a.has('rules')) a.set('rules', doc.createNode([]));
    (a.get('rules') as { add(v: unknown): void }).add(doc.createNode(entry));
  }
  return String(doc);
}

/** The file's text without the rule named `rule`; null when no such rule is in it. */
export function removeGrantText(text: string, rule: string): string | null {
  const doc = parseDocument(text);
  if (!isMap(doc.contents)) return null;
  const drop = (seq: unknown): boolean => {
    if (!isSeq(seq)) return false;
    const i = seq.items.findIndex((x) => isMap(x) && x.get('name') === rule);
    if (i === -1) return false;
    seq.items.splice(i, 1);
    return true;
  };
  let found = drop(doc.get('rules'));
  const agents = doc.get('agents');
  if (!found && isSeq(agents)) for (const a of agents.items) if (isMap(a) && drop(a.get('rules'))) found = true;
  return found ? String(doc) : null;
}

/**
 * The policy with the grants' rules appended (deny still wins: they are allow rules). An everyone grant
 * is a shared rule, and is also given to agents that do not take the shared rules, so "everyone" means
 * everyone. A grant for an agent the policy does not define applies to nobody.
 */
export function mergeGrants(spec: PolicySpec, g: GrantRules): PolicySpec {
  if (g.shared.length === 0 && g.agents.size === 0) return spec;
  const agents = spec.agents.map((a) => {
    const own = g.agents.get(a.name) ?? [];
    const extra = a.sharedRules ? own : [...own, ...g.shared];
    return extra.length ? { ...a, rules: [...a.rules, ...extra] } : a;
  });
  const out: PolicySpec = { ...spec, rules: [...spec.rules, ...g.shared], agents };
  out.hash = policyHash(out);
  return out;
}
