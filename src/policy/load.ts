import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import {
  parseCidrText,
  parseHostPattern,
  parsePortItem,
  shapeMessage,
  validateShape,
  ValueError,
} from './schema.js';
import { policyHash } from './compile.js';
import { parsePathPattern, type RequestRuleSpec } from './request-rules.js';
import { defaultPlaceholder, SECRET_REF } from './secrets.js';
import { TUNNEL_PROTOCOLS, type TunnelProtocol } from './vocabulary.js';
import { PolicyError, type AgentSpec, type HeaderSetting, type PolicySpec, type PortRange, type RuleSpec, type SecretSpec } from './types.js';

/** Headers a rule may not set: the proxy owns framing, routing and its own credentials. */
const UNSETTABLE = new Set([
  'host', 'content-length', 'transfer-encoding', 'connection', 'proxy-connection', 'proxy-authorization',
  'keep-alive', 'te', 'trailer', 'upgrade', 'expect',
]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

type Path = (string | number)[];
type ErrorItem = PolicyError['errors'][number];

/** Collects every problem in one file, each pinned to the YAML node it is about. */
class Problems {
  readonly list: ErrorItem[] = [];
  constructor(
    private readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  at(path: Path, message: string, onKey = false): void {
    const offset = offsetOf(this.doc, path, onKey);
    const { line, col } = this.lines.linePos(offset);
    this.list.push({ file: this.file, line, column: col, message: `${pathText(path)}${message}` });
  }
}

function pathText(path: Path): string {
  if (path.length === 0) return '';
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? p : `.${p}`;
  return `${s}: `;
}

/** Walk to the node at a path; the deepest node reached stands in when the path runs out (missing key). */
function offsetOf(doc: Document.Parsed, path: Path, onKey: boolean): number {
  let node: unknown = doc.contents;
  let best = (node as Node | null)?.range?.[0] ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    let next: unknown;
    if (isSeq(node)) next = node.items[Number(seg)];
    else if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair && onKey && i === path.length - 1) next = pair.key;
      else next = pair?.value ?? pair?.key;
    }
    if (!next || !(next as Node).range) break;
    node = next;
    best = (node as Node).range![0];
  }
  return best;
}

function nodeAt(doc: Document.Parsed, path: Path): unknown {
  return doc.getIn(path, true);
}

/** Parse and validate a policy's text; throws one PolicyError listing every problem found. */
export function parsePolicyText(text: string, file: string): PolicySpec {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new PolicyError(
      doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        return { file, line, column: col, message: `YAML: ${e.message.split('\n')[0]}` };
      }),
    );
  }
  const problems = new Problems(file, doc, lines);
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    throw new PolicyError([{ file, line: 1, column: 1, message: 'the policy is empty (expected a mapping with version: 1)' }]);
  }
  if (!isMap(doc.contents)) {
    problems.at([], 'the policy must be a mapping (key: value), not a list or a scalar');
    throw new PolicyError(problems.list);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    problems.at([], `YAML: ${(e as Error).message}`);
    throw new PolicyError(problems.list);
  }

  for (const e of validateShape(data)) {
    const path: Path = e.instancePath === '' ? [] : e.instancePath.slice(1).split('/').map(decodePointer);
    if (e.keyword === 'additionalProperties') {
      const key = String((e.params as { additionalProperty: string }).additionalProperty);
      problems.at([...path, key], shapeMessage(e), true);
    } else problems.at(path, shapeMessage(e));
  }

  const spec = buildSpec(data as Record<string, unknown>, file, doc, text, problems, lines);
  if (problems.list.length > 0) {
    problems.list.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new PolicyError(problems.list);
  }
  spec.hash = policyHash(spec);
  return spec;
}

function decodePointer(seg: string): string | number {
  const s = seg.replace(/~1/g, '/').replace(/~0/g, '~');
  return /^\d+$/.test(s) ? Number(s) : s;
}

/** Read a policy file (synchronously: only at start-up and on reload). */
export function loadPolicyFile(path: string): PolicySpec {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new PolicyError([{ file: path, line: 0, column: 0, message: `cannot read policy: ${(e as Error).message}` }]);
  }
  return parsePolicyText(text, path);
}

/**
 * The semantic half: turns shape-checked data into a PolicySpec, reporting every bad value.
 * Defensive about types throughout, since it also runs when the shape check already failed
 * (so one pass reports everything).
 */
function buildSpec(
  data: Record<string, unknown>,
  file: string,
  doc: Document.Parsed,
  text: string,
  problems: Problems,
  lines: LineCounter,
): PolicySpec {
  const lineOf = (path: Path): number => lines.linePos(offsetOf(doc, path, false)).line;
  const cidrs = (v: unknown, path: Path): string[] => {
    const out: string[] = [];
    if (!Array.isArray(v)) return out;
    v.forEach((c, i) => {
      if (typeof c !== 'string') return;
      try {
        out.push(parseCidrText(c));
      } catch (e) {
        problems.at([...path, i], (e as Error).message);
      }
    });
    return out;
  };

  const baseDir = dirname(resolve(file));
  const secretSpecs = secretsOf(data.secrets);
  const secretNames = new Set(secretSpecs.map((x) => x.name));

  function secretsOf(v: unknown): SecretSpec[] {
    const out: SecretSpec[] = [];
    if (!Array.isArray(v)) return out;
    const seen = new Map<string, number>();
    v.forEach((x, i) => {
      if (!x || typeof x !== 'object' || Array.isArray(x)) return;
      const sp: Path = ['secrets', i];
      const o = x as Record<string, unknown>;
      const name = typeof o.name === 'string' ? o.name : '';
      if (name && seen.has(name)) problems.at([...sp, 'name'], `duplicate secret name ${JSON.stringify(name)} (first at line ${seen.get(name)})`);
      else if (name) seen.set(name, lineOf([...sp, 'name']));
      if ((o.env === undefined) === (o.file === undefined)) problems.at(sp, 'a secret needs exactly one of env or file');
      const placeholder = typeof o.placeholder === 'string' ? o.placeholder : defaultPlaceholder(name);
      for (const other of out) {
        if (other.placeholder.includes(placeholder) || placeholder.includes(other.placeholder)) {
          problems.at([...sp, 'placeholder'], `placeholder overlaps the one of secret ${JSON.stringify(other.name)}: each must be distinct and not contain another`);
        }
      }
      out.push({
        name,
        env: typeof o.env === 'string' ? o.env : null,
        file: typeof o.file === 'string' ? resolve(baseDir, o.file) : null,
        placeholder,
        pos: { file, line: lineOf(sp) },
      });
    });
    return out;
  }

  /** One matcher map (query, match_headers): name → list of value globs. */
  function valueMap(v: unknown, lower: boolean): Record<string, string[]> | null {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
    const out: Record<string, string[]> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const vals = Array.isArray(x) ? x.filter((y): y is string => typeof y === 'string') : typeof x === 'string' ? [x] : [];
      out[lower ? k.toLowerCase() : k] = vals;
    }
    return out;
  }

  function requestOf(rule: Record<string, unknown>, rp: Path): RequestRuleSpec {
    let paths: string[] | null = null;
    if (Array.isArray(rule.paths)) {
      paths = [];
      rule.paths.forEach((p, j) => {
        if (typeof p !== 'string') return;
        try {
          paths!.push(parsePathPattern(p));
        } catch (e) {
          if (e instanceof ValueError) problems.at([...rp, 'paths', j], e.message);
          else throw e;
        }
      });
    }
    const matchHeaders = valueMap(rule.match_headers, true);
    if (matchHeaders) {
      for (const k of Object.keys(matchHeaders)) if (!TOKEN.test(k)) problems.at([...rp, 'match_headers'], `bad header name ${JSON.stringify(k)}`);
    }
    return { paths, query: valueMap(rule.query, false), matchHeaders };
  }

  function headersOf(v: unknown, hp: Path, secrets: string[]): HeaderSetting[] {
    const out: HeaderSetting[] = [];
    if (!v || typeof v !== 'object' || Array.isArray(v)) return out;
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (typeof x !== 'string') continue;
      const name = k.toLowerCase();
      if (!TOKEN.test(k)) problems.at([...hp, k], `bad header name ${JSON.stringify(k)}`, true);
      else if (UNSETTABLE.has(name)) problems.at([...hp, k], `header ${JSON.stringify(k)} cannot be set by a rule`, true);
      if (/[\r\n\0]/.test(x)) problems.at([...hp, k], 'a header value cannot contain CR, LF or NUL');
      for (const m of x.matchAll(SECRET_REF)) {
        if (!secrets.includes(m[1])) problems.at([...hp, k], `refers to secret ${JSON.stringify(m[1])}, which the rule does not list under secrets`);
      }
      out.push({ name, value: x });
    }
    return out;
  }

  /** `protocols`: the schema checked each item; duplicates are dropped, and inspect rules see TLS terminated. */
  function protocolsOf(rule: Record<string, unknown>, rp: Path): TunnelProtocol[] | null {
    if (!Array.isArray(rule.protocols)) return null;
    if (rule.inspect === true) problems.at([...rp, 'protocols'], 'protocols does not apply to an inspect rule (its tunnels carry TLS the proxy terminates)');
    const out: TunnelProtocol[] = [];
    for (const p of rule.protocols) if ((TUNNEL_PROTOCOLS as readonly unknown[]).includes(p) && !out.includes(p as TunnelProtocol)) out.push(p as TunnelProtocol);
    return out;
  }

  const rulesOf = (v: unknown, path: Path): RuleSpec[] => {
    const out: RuleSpec[] = [];
    if (!Array.isArray(v)) return out;
    const seen = new Map<string, number>();
    v.forEach((r, i) => {
      if (!r || typeof r !== 'object' || Array.isArray(r)) return;
      const rp = [...path, i];
      const rule = r as Record<string, unknown>;
      const name = typeof rule.name === 'string' ? rule.name : '';
      if (name && seen.has(name)) {
        problems.at([...rp, 'name'], `duplicate rule name ${JSON.stringify(name)} (first at line ${seen.get(name)})`);
      } else if (name) seen.set(name, lineOf([...rp, 'name']));
      const action = rule.action === 'deny' ? 'deny' : rule.action === 'ask' ? 'ask' : 'allow';
      const hosts: string[] = [];
      if (Array.isArray(rule.hosts)) {
        rule.hosts.forEach((h, j) => {
          if (typeof h !== 'string') return;
          try {
            hosts.push(parseHostPattern(h));
          } catch (e) {
            if (e instanceof ValueError) problems.at([...rp, 'hosts', j], e.message);
            else throw e;
          }
        });
      }
      const ruleCidrs = cidrs(rule.cidrs, [...rp, 'cidrs']);
      if (rule.hosts === undefined && rule.cidrs === undefined) {
        problems.at(rp, 'a rule needs hosts or cidrs (or both)');
      }
      let ports: PortRange[] | null = null;
      if (Array.isArray(rule.ports)) {
        ports = [];
        rule.ports.forEach((p, j) => {
          if (typeof p !== 'string' && typeof p !== 'number') return;
          // Numbers are re-read from their source text: YAML takes 443e1 for 4430 and 0x1bb for 443.
          const node = nodeAt(doc, [...rp, 'ports', j]);
          const raw =
            typeof p === 'number' && isScalar(node) && node.range ? text.slice(node.range[0], node.range[1]) : String(p);
          try {
            ports!.push(parsePortItem(raw));
          } catch (e) {
            if (e instanceof ValueError) problems.at([...rp, 'ports', j], e.message);
            else throw e;
          }
        });
      }
      let methods: string[] | null = null;
      if (Array.isArray(rule.methods)) {
        methods = [];
        rule.methods.forEach((m, j) => {
          if (typeof m !== 'string') return;
          const up = m.toUpperCase();
          if (up === 'CONNECT') {
            problems.at([...rp, 'methods', j], 'CONNECT cannot be listed: methods only apply to plain HTTP requests');
          } else if (!methods!.includes(up)) methods!.push(up);
        });
      }
      let dnsTypes: string[] | null = null;
      if (Array.isArray(rule.dns_types)) {
        if (action !== 'allow') problems.at([...rp, 'dns_types'], 'dns_types only applies to allow rules');
        dnsTypes = [];
        for (const t of rule.dns_types) if (typeof t === 'string' && !dnsTypes.includes(t.toUpperCase())) dnsTypes.push(t.toUpperCase());
      }
      const request = requestOf(rule, rp);
      const inspect = rule.inspect === true;
      const secrets: string[] = [];
      if (Array.isArray(rule.secrets)) {
        rule.secrets.forEach((n, j) => {
          if (typeof n !== 'string') return;
          if (!secretNames.has(n)) problems.at([...rp, 'secrets', j], `unknown secret ${JSON.stringify(n)} (define it under the top-level secrets)`);
          else if (!secrets.includes(n)) secrets.push(n);
        });
      }
      const setHeaders = headersOf(rule.headers, [...rp, 'headers'], secrets);
      const protocols = protocolsOf(rule, rp);
      if (action !== 'allow') {
        for (const k of ['inspect', 'secrets', 'headers', 'protocols'] as const) {
          if (rule[k] !== undefined) problems.at([...rp, k], `${k} only applies to allow rules`, true);
        }
      }
      out.push({ name, action, hosts, cidrs: ruleCidrs, ports, methods, dnsTypes, request, inspect, secrets, setHeaders, protocols, pos: { file, line: lineOf(rp) } });
    });
    return out;
  };

  const agents: AgentSpec[] = [];
  if (Array.isArray(data.agents)) {
    const seen = new Map<string, number>();
    const certOwners = new Map<string, string>();
    data.agents.forEach((a, i) => {
      if (!a || typeof a !== 'object' || Array.isArray(a)) return;
      const ap: Path = ['agents', i];
      const agent = a as Record<string, unknown>;
      const name = typeof agent.name === 'string' ? agent.name : '';
      if (name && seen.has(name)) {
        problems.at([...ap, 'name'], `duplicate agent name ${JSON.stringify(name)} (first at line ${seen.get(name)})`);
      } else if (name) seen.set(name, lineOf([...ap, 'name']));
      if (agent.token_sha256 !== undefined && agent.token_env !== undefined) {
        problems.at([...ap, 'token_env'], 'give token_sha256 or token_env, not both');
      }
      const certNames: string[] = [];
      if (Array.isArray(agent.cert_names)) {
        agent.cert_names.forEach((c, j) => {
          if (typeof c !== 'string') return;
          const owner = certOwners.get(c);
          // Two agents behind one certificate name would make identity ambiguous: refuse, never guess.
          if (owner !== undefined && owner !== name) {
            problems.at([...ap, 'cert_names', j], `certificate name ${JSON.stringify(c)} already identifies agent ${JSON.stringify(owner)}`);
          } else certOwners.set(c, name);
          certNames.push(c);
        });
      }
      agents.push({
        name,
        mode: agent.mode === 'report' || agent.mode === 'enforce' ? agent.mode : null,
        tokenSha256: typeof agent.token_sha256 === 'string' ? agent.token_sha256.toLowerCase() : null,
        tokenEnv: typeof agent.token_env === 'string' ? agent.token_env : null,
        sources: cidrs(agent.sources, [...ap, 'sources']),
        certNames,
        sharedRules: agent.shared_rules !== false,
        rules: rulesOf(agent.rules, [...ap, 'rules']),
        ...(agent.on_no_match === 'ask' || agent.on_no_match === 'deny' ? { onNoMatch: agent.on_no_match } : {}),
        pos: { file, line: lineOf(ap) },
      });
    });
  }

  const guard = data.address_guard as Record<string, unknown> | undefined;
  return {
    file,
    hash: '',
    mode: data.mode === 'report' ? 'report' : 'enforce',
    requireAuth: data.require_auth === true,
    // Set only when asked for, so a policy without the key keeps the hash it always had.
    ...(data.on_no_match === 'ask' ? { onNoMatch: 'ask' as const } : {}),
    guardExempt: guard && typeof guard === 'object' ? cidrs(guard.exempt, ['address_guard', 'exempt']) : [],
    rules: rulesOf(data.rules, ['rules']),
    agents,
    secrets: secretSpecs,
    inspection: inspectionOf(data.inspection),
  };

  function inspectionOf(v: unknown): PolicySpec['inspection'] {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
    const o = v as Record<string, unknown>;
    if (typeof o.ca !== 'string' || typeof o.ca_key !== 'string') return null;
    return { ca: resolve(baseDir, o.ca), caKey: resolve(baseDir, o.ca_key), pos: { file, line: lineOf(['inspection']) } };
  }
}
