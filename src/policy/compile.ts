import { createHash, timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { DEFAULT_TUNNEL_PROTOCOLS, type Mode } from './vocabulary.js';
import { embeddedIpv4, parseCidr, sourceAddress, toWords, v4Text, type Cidr, type EmbeddedIpv4 } from '../net/ip.js';
import { CidrIndex, NameIndex } from './host-index.js';
import { compileRequestRule, type HttpFacts, type RequestMatcher } from './request-rules.js';
import { loadSecrets } from './secrets.js';
import type {
  AddressConstraint,
  AgentSpec,
  CompiledPolicy,
  DecisionRequest,
  Identity,
  IdentifyInput,
  PolicyDecision,
  PolicySpec,
  PortRange,
  RuleEffects,
  RuleSpec,
} from './types.js';

/** A compiled policy plus what compiling noticed but did not refuse (e.g. an unset token_env). */
export interface CompiledPolicyWithWarnings extends CompiledPolicy {
  readonly warnings: string[];
}

/** The query types every resolvable name gets; anything else needs a rule's dns_types. */
const ORDINARY_QTYPES = new Set(['A', 'AAAA', 'CNAME', 'HTTPS', 'SVCB']);
const ALLOW_DEFAULT_PORTS: PortRange[] = [[443, 443]];
const NO_STRINGS: readonly string[] = Object.freeze([]);

interface CRule {
  readonly name: string;
  readonly allow: boolean;
  /** An ask rule: neither allows nor denies; it holds the request for an approval (deny > allow > ask). */
  readonly ask: boolean;
  /** Lower decides first: an agent's own rules (negative) before shared rules, each in file order. */
  readonly order: number;
  /** null = every port. */
  readonly ports: readonly PortRange[] | null;
  readonly methods: ReadonlySet<string> | null;
  readonly dnsTypes: ReadonlySet<string> | null;
  /** Path, query and header matchers; null = the rule does not look at the request. */
  readonly request: RequestMatcher | null;
  /** What an allow rule asks of what it allows (shared, frozen). */
  readonly effects: RuleEffects;
  /** The rule's CIDRs when it also names hosts (they constrain resolved addresses); null otherwise. */
  readonly cidrs: readonly string[] | null;
  /** For an allow rule with cidrs: the constraint when it is the only rule deciding (shared, frozen). */
  readonly solo: AddressConstraint | null;
}

/** One list's rules, indexed. */
interface RuleSet {
  readonly names: NameIndex<CRule>;
  readonly addrs: CidrIndex<CRule>;
  /** Deny rules with CIDRs: they also refuse resolved addresses of allowed names. */
  readonly denyCidrRules: readonly CRule[];
}

interface CAgent {
  readonly name: string;
  readonly order: number;
  readonly mode: Mode;
  /** Hold a request no rule matches for an approval instead of denying it. */
  readonly askOnNoMatch: boolean;
  readonly sets: readonly RuleSet[];
  readonly denyCidrRules: readonly CRule[];
  /** Deny-CIDR part of every constraint when no deny-CIDR rule depends on port or method. */
  readonly staticDeny: { cidrs: readonly string[]; rules: readonly string[] } | null;
  /** sha256 of the token; null = credentials can never match this agent. */
  readonly digest: Buffer | null;
}

function compileRule(r: RuleSpec, order: number): CRule {
  const allow = r.action === 'allow';
  const ask = r.action === 'ask';
  const cidrs = r.hosts.length > 0 && r.cidrs.length > 0 ? Object.freeze([...r.cidrs]) : null;
  return {
    name: r.name,
    allow,
    ask,
    order,
    // An ask grants nothing by itself (a person sees the port), so it covers every port unless told.
    ports: r.ports ?? (allow ? ALLOW_DEFAULT_PORTS : null),
    methods: r.methods ? new Set(r.methods) : null,
    dnsTypes: r.dnsTypes ? new Set(r.dnsTypes) : null,
    request: compileRequestRule(r.request),
    effects: Object.freeze({
      inspect: r.inspect,
      secrets: Object.freeze([...r.secrets]),
      setHeaders: Object.freeze([...r.setHeaders]),
      protocols: Object.freeze([...(r.protocols ?? DEFAULT_TUNNEL_PROTOCOLS)]),
    }),
    cidrs,
    solo: allow && cidrs ? Object.freeze({ allowCidrs: cidrs as string[], denyCidrs: NO_STRINGS as string[], rules: [r.name] }) : null,
  };
}

function buildSet(rules: RuleSpec[], firstOrder: number): RuleSet {
  const names = new NameIndex<CRule>();
  const addrs = new CidrIndex<CRule>();
  const denyCidrRules: CRule[] = [];
  rules.forEach((r, i) => {
    const c = compileRule(r, firstOrder + i);
    for (const h of r.hosts) names.add(h, c);
    for (const cidr of r.cidrs) addrs.add(cidr, c);
    if (!c.allow && !c.ask && r.cidrs.length > 0) denyCidrRules.push({ ...c, cidrs: Object.freeze([...r.cidrs]) });
  });
  return { names, addrs, denyCidrRules };
}

function inPorts(ports: readonly PortRange[], port: number): boolean {
  for (let i = 0; i < ports.length; i++) if (port >= ports[i][0] && port <= ports[i][1]) return true;
  return false;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/**
 * Compile a validated spec into indexes and closures for pure, allocation-light decisions.
 * `env` is read once, here: a token_env that is unset leaves that agent's credentials unmatchable
 * (fail closed) and adds a warning instead of failing the load.
 */
export function compilePolicy(
  spec: PolicySpec,
  env: NodeJS.ProcessEnv = process.env,
  opts: { secretValues?: boolean } = {},
): CompiledPolicyWithWarnings {
  const warnings: string[] = [];
  const secrets = loadSecrets(spec.secrets, env, opts.secretValues ?? true, warnings);
  const hash = spec.hash || policyHash(spec);
  const shared = buildSet(spec.rules, 0);
  const anonymous = makeAgent(null, spec, shared, env, warnings, -1);
  const agents = new Map<string, CAgent>();
  const byCert = new Map<string, CAgent>();
  const bySource = new CidrIndex<CAgent>();
  spec.agents.forEach((a, i) => {
    const ca = makeAgent(a, spec, shared, env, warnings, i);
    agents.set(a.name, ca);
    for (const c of a.certNames) if (!byCert.has(c)) byCert.set(c, ca);
    for (const s of a.sources) bySource.add(s, ca);
    if (!a.tokenSha256 && !a.tokenEnv && a.sources.length === 0 && a.certNames.length === 0) {
      warnings.push(`agent ${JSON.stringify(a.name)} has no token, sources or cert_names: nothing can identify it`);
    }
  });

  // Parsed once: vetAddresses runs per connection and must not re-parse the policy's CIDRs.
  const cidrCache = new Map<string, Cidr>();
  const cidrOf = (text: string): Cidr | null => {
    let c = cidrCache.get(text);
    if (c === undefined) {
      try {
        c = parseCidr(text);
      } catch {
        return null;
      }
      cidrCache.set(text, c);
    }
    return c;
  };

  // Per-decision scratch. decide() is synchronous, so one set of slots serves every call.
  let sPort: number | null = null;
  let sMethod: string | null = null;
  let sQtype: string | null = null;
  let sIsIp = false;
  let sDenyOnly = false;
  let bestAllow: CRule | null = null;
  let bestDeny: CRule | null = null;
  let bestAsk: CRule | null = null;
  let methodMiss: CRule | null = null;
  /** Opaque tunnel only: a deny rule with methods that requests inside the tunnel could match. */
  let methodDeny: CRule | null = null;
  let sHttp: HttpFacts | null = null;
  /** The allow rule that matched all but the request matchers (path, query, headers). */
  let requestMiss: CRule | null = null;
  /** Opaque tunnel only: a deny rule with request matchers that requests inside could match. */
  let requestDeny: CRule | null = null;
  /** The request's methods cannot be seen (an uninspected tunnel): it may carry any method. */
  let sOpaque = false;
  let unconstrained = false;
  let qtypeOk = false;
  const cidrAllows: CRule[] = [];

  const visit = (r: CRule): void => {
    if (sPort !== null && r.ports !== null && !inPorts(r.ports, sPort)) return;
    if (r.ask) {
      // Matched like an allow rule (same method and request tests), but only remembered: it decides
      // nothing while a deny or an allow rule matches.
      if (sDenyOnly) return;
      if (r.methods !== null && (sOpaque || (sMethod !== null && !r.methods.has(sMethod)))) return;
      if (r.request !== null && (sOpaque || (sMethod !== null && (sHttp === null || !r.request.matches(sHttp))))) return;
      if (bestAsk === null || r.order < bestAsk.order) bestAsk = r;
      return;
    }
    if (r.allow) {
      if (sDenyOnly) return;
      // An opaque tunnel may carry any method, so a rule that allows only some cannot allow it.
      if (r.methods !== null && (sOpaque || (sMethod !== null && !r.methods.has(sMethod)))) {
        // Remember which rule matched all but the method, so the refusal can name it.
        if (methodMiss === null || r.order < methodMiss.order) methodMiss = r;
        return;
      }
      // Request matchers need the request: an opaque tunnel, or a method without its path, cannot pass them.
      if (r.request !== null && (sOpaque || (sMethod !== null && (sHttp === null || !r.request.matches(sHttp))))) {
        if (requestMiss === null || r.order < requestMiss.order) requestMiss = r;
        return;
      }
      if (bestAllow === null || r.order < bestAllow.order) bestAllow = r;
      if (r.cidrs === null || sIsIp) unconstrained = true;
      else cidrAllows.push(r);
      if (sQtype !== null && r.dnsTypes !== null && r.dnsTypes.has(sQtype)) qtypeOk = true;
    } else {
      // A deny rule with methods denies only those methods. A request whose method is seen is judged by
      // it; an opaque tunnel could carry one of them, so it is refused (fail closed); DNS and an
      // inspected tunnel (whose requests are each decided later) are not refused on their account.
      if (r.methods !== null) {
        if (sOpaque) {
          if (methodDeny === null || r.order < methodDeny.order) methodDeny = r;
          return;
        }
        if (sMethod === null || !r.methods.has(sMethod)) return;
      }
      if (r.request !== null) {
        if (sOpaque) {
          if (requestDeny === null || r.order < requestDeny.order) requestDeny = r;
          return;
        }
        if (sHttp === null || !r.request.matches(sHttp)) return;
      }
      if (bestDeny === null || r.order < bestDeny.order) bestDeny = r;
    }
  };

  const deny = (reason: PolicyDecision['reason'], rule: string | null, mode: Mode): PolicyDecision => ({
    verdict: 'deny',
    reason,
    rule,
    mode,
    constraint: null,
  });
  /**
   * A deny that the proxy and the DNS filter may hold for an approval. Its constraint carries the deny
   * rules' CIDRs, so an approved request still never reaches an address a deny rule refuses.
   */
  const askFor = (rule: string | null, agent: CAgent): PolicyDecision => ({
    verdict: 'deny',
    reason: 'approval_required',
    rule,
    mode: agent.mode,
    constraint: sIsIp ? null : constraintFor(agent),
    ask: true,
  });

  function decide(req: DecisionRequest): PolicyDecision {
    const agent = req.agent === null ? anonymous : agents.get(req.agent);
    if (agent === undefined) return deny('no_rule', null, spec.mode);
    sPort = req.port;
    sQtype = req.qtype !== undefined ? upper(req.qtype) : null;
    sMethod = req.method !== undefined ? upper(req.method) : null;
    if (sMethod === 'CONNECT') sMethod = null;
    sOpaque = methodsHidden(req, sMethod);
    sIsIp = req.host.kind === 'ip';
    sDenyOnly = false;
    bestAllow = null;
    bestDeny = null;
    bestAsk = null;
    methodMiss = null;
    methodDeny = null;
    sHttp = req.http ?? null;
    requestMiss = null;
    requestDeny = null;
    unconstrained = false;
    qtypeOk = false;
    cidrAllows.length = 0;
    const host = req.host;
    for (const set of agent.sets) {
      if (host.kind === 'name') set.names.lookup(host.value, visit);
      else set.addrs.lookup(host.value, host.family, visit);
    }
    if (host.kind === 'ip' && host.family === 6 && bestDeny === null) lookupEmbedded(agent, host.value);
    const mode = agent.mode;
    const d = bestDeny as CRule | null;
    if (d !== null) return deny('rule_deny', d.name, mode);
    if (sQtype !== null && !qtypeOk && !ORDINARY_QTYPES.has(sQtype)) return deny('qtype_refused', null, mode);
    const a = bestAllow as CRule | null;
    const m = methodMiss as CRule | null;
    const pm = requestMiss as CRule | null;
    if (a === null) {
      // deny > allow > ask: an explicit allow never asks, and an ask rule outranks a near miss.
      const k = bestAsk as CRule | null;
      if (k !== null) return askFor(k.name, agent);
      if (m !== null) return deny('method_not_allowed', m.name, mode);
      if (pm !== null) return deny('path_not_allowed', pm.name, mode);
      return agent.askOnNoMatch ? askFor(null, agent) : deny('no_rule', null, mode);
    }
    const md = methodDeny as CRule | null;
    if (md !== null) return deny('method_not_allowed', md.name, mode);
    const pd = requestDeny as CRule | null;
    if (pd !== null) return deny('path_not_allowed', pd.name, mode);
    return { verdict: 'allow', reason: 'rule_allow', rule: a.name, mode, constraint: sIsIp ? null : constraintFor(agent), effects: a.effects };
  }

  /**
   * An IPv6 literal that embeds IPv4 (NAT64, 6to4, SIIT, compatible, Teredo, local-use NAT64) reaches
   * that IPv4 host, so IPv4 CIDR rules judge it too: one unambiguous IPv4 meets allow and deny rules
   * alike; ambiguous candidates (Teredo's two, local NAT64's positions) meet deny rules only.
   */
  function lookupEmbedded(agent: CAgent, v6: string): void {
    const e = embeddedOf(v6);
    if (e === null) return;
    sDenyOnly = e.v4 === null;
    for (const n of e.candidates) {
      const v4 = v4Text(n);
      for (const set of agent.sets) set.addrs.lookup(v4, 4, visit);
    }
    sDenyOnly = false;
  }

  function constraintFor(agent: CAgent): AddressConstraint | null {
    let denyCidrs: readonly string[] = NO_STRINGS;
    let denyRules: readonly string[] = NO_STRINGS;
    if (agent.staticDeny !== null) {
      denyCidrs = agent.staticDeny.cidrs;
      denyRules = agent.staticDeny.rules;
    } else if (agent.denyCidrRules.length > 0) {
      const cs: string[] = [];
      const rs: string[] = [];
      for (const r of agent.denyCidrRules) {
        if (sPort !== null && r.ports !== null && !inPorts(r.ports, sPort)) continue;
        if (r.methods !== null && !sOpaque && (sMethod === null || !r.methods.has(sMethod))) continue;
        if (r.request !== null && !sOpaque && (sHttp === null || !r.request.matches(sHttp))) continue;
        cs.push(...r.cidrs!);
        rs.push(r.name);
      }
      denyCidrs = cs;
      denyRules = rs;
    }
    if (unconstrained || cidrAllows.length === 0) {
      if (denyCidrs.length === 0) return null;
      return { allowCidrs: null, denyCidrs: denyCidrs as string[], rules: denyRules as string[] };
    }
    if (cidrAllows.length === 1 && denyCidrs.length === 0) return cidrAllows[0].solo;
    const allowCidrs: string[] = [];
    const rules: string[] = [];
    for (const r of cidrAllows) {
      if (rules.includes(r.name)) continue;
      rules.push(r.name);
      for (const c of r.cidrs!) if (!allowCidrs.includes(c)) allowCidrs.push(c);
    }
    return { allowCidrs, denyCidrs: denyCidrs as string[], rules: [...rules, ...denyRules] };
  }

  function vetAddresses(constraint: AddressConstraint | null, addresses: string[]): { allowed: string[]; refused: string[] } {
    if (constraint === null) return { allowed: [...addresses], refused: [] };
    const allowed: string[] = [];
    const refused: string[] = [];
    for (const address of addresses) {
      (acceptable(constraint, address) ? allowed : refused).push(address);
    }
    return { allowed, refused };
  }

  /** Fail closed: an address or CIDR that cannot be parsed never counts as acceptable. */
  function acceptable(c: AddressConstraint, address: string): boolean {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.parse(address);
    } catch {
      return false;
    }
    // IPv4 embedded in IPv6 is judged as that IPv4: a deny CIDR refuses any candidate, an allow CIDR
    // accepts only an unambiguous one (lookupEmbedded's rule, for resolved addresses).
    const e = addr.kind() === 'ipv6' ? embeddedIpv4(toWords(addr.toByteArray())) : null;
    const inner = e === null ? NO_ADDRS : e.candidates.map((n) => ipaddr.fromByteArray([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]));
    for (const text of c.denyCidrs) {
      const cidr = cidrOf(text);
      if (cidr === null || within(addr, cidr)) return false;
      for (const v4 of inner) if (within(v4, cidr)) return false;
    }
    if (c.allowCidrs === null) return true;
    for (const text of c.allowCidrs) {
      const cidr = cidrOf(text);
      if (cidr === null) continue;
      if (within(addr, cidr) || (e !== null && e.v4 !== null && within(inner[0], cidr))) return true;
    }
    return false;
  }

  // Source address -> agent name (or null): a pure function of this compiled policy, memoised since the
  // same few client addresses recur on every request. Bounded: cleared whole when full.
  const sourceMemo = new Map<string, string | null>();
  function agentBySource(text: string): string | null {
    const hit = sourceMemo.get(text);
    if (hit !== undefined) return hit;
    const src = sourceAddress(text);
    let best: CAgent | null = null;
    if (src !== null) {
      bySource.lookup(src.address, src.family, (a) => {
        if (best === null || a.order < best.order) best = a;
      });
    }
    const name = best === null ? null : (best as CAgent).name;
    if (sourceMemo.size >= 1024) sourceMemo.clear();
    sourceMemo.set(text, name);
    return name;
  }

  function identify(input: IdentifyInput): Identity {
    if (input.authPresent) {
      const a = input.username !== undefined ? agents.get(input.username) : undefined;
      // Always hash and compare, so an unknown user costs the same as a wrong password.
      const given = sha256(input.password ?? '');
      const ok = timingSafeEqual(given, a?.digest ?? UNMATCHABLE) && a !== undefined && a.digest !== null && input.password !== undefined;
      if (ok) return { ok: true, agent: a!.name };
      return { ok: false, reason: 'auth_required', message: 'invalid proxy credentials' };
    }
    if (input.certNames && input.certNames.length > 0) {
      let best: CAgent | null = null;
      for (const n of input.certNames) {
        const a = byCert.get(n);
        if (a !== undefined && (best === null || a.order < best.order)) best = a;
      }
      if (best !== null) return { ok: true, agent: best.name };
    }
    const bySrc = bySource.size === 0 ? null : agentBySource(input.sourceAddress);
    if (bySrc !== null) return { ok: true, agent: bySrc };
    if (spec.requireAuth) return { ok: false, reason: 'auth_required', message: 'proxy credentials required' };
    return { ok: true, agent: null };
  }

  const modeFor = (agent: string | null): Mode => (agent === null ? spec.mode : agents.get(agent)?.mode ?? spec.mode);

  return { spec, hash, decide, vetAddresses, identify, modeFor, warnings, secrets };
}

/** Stand-in compared against when there is no digest, so failures take as long as mismatches. */
const UNMATCHABLE = Buffer.alloc(32);

function makeAgent(
  a: AgentSpec | null,
  spec: PolicySpec,
  shared: RuleSet,
  env: NodeJS.ProcessEnv,
  warnings: string[],
  order: number,
): CAgent {
  const sets: RuleSet[] = [];
  // An agent's own rules come first when naming the deciding rule (orders below the shared rules').
  if (a !== null && a.rules.length > 0) sets.push(buildSet(a.rules, -a.rules.length));
  if (a === null || a.sharedRules) sets.push(shared);
  const denyCidrRules = sets.flatMap((s) => s.denyCidrRules);
  const staticOk = denyCidrRules.every((r) => r.ports === null && r.methods === null && r.request === null);
  const staticDeny =
    staticOk && denyCidrRules.length > 0
      ? {
          cidrs: Object.freeze([...new Set(denyCidrRules.flatMap((r) => r.cidrs!))]),
          rules: Object.freeze(denyCidrRules.map((r) => r.name)),
        }
      : null;
  let digest: Buffer | null = null;
  if (a?.tokenSha256) digest = Buffer.from(a.tokenSha256, 'hex');
  else if (a?.tokenEnv) {
    const v = env[a.tokenEnv];
    if (v) digest = sha256(v);
    else warnings.push(`agent ${JSON.stringify(a.name)}: token_env ${a.tokenEnv} is not set; its credentials will never match`);
  }
  const askOnNoMatch = (a?.onNoMatch ?? spec.onNoMatch ?? 'deny') === 'ask';
  return { name: a?.name ?? '', order, mode: a?.mode ?? spec.mode, askOnNoMatch, sets, denyCidrRules, staticDeny, digest };
}

function within(addr: ipaddr.IPv4 | ipaddr.IPv6, cidr: Cidr): boolean {
  if (addr.kind() !== cidr.range[0].kind()) return false;
  return addr.match(cidr.range as [ipaddr.IPv4, number]);
}

/**
 * Whether the request may carry methods the proxy cannot see: a tunnel (no method, or CONNECT) that is
 * not inspected. DNS (a query type) has no method of its own; a plain request names its method.
 */
function methodsHidden(req: DecisionRequest, method: string | null): boolean {
  if (method !== null || req.qtype !== undefined) return false;
  return req.tunnel !== 'inspected';
}

function upper(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 97 && c <= 122) return s.toUpperCase();
  }
  return s;
}

const NO_ADDRS: readonly ipaddr.IPv4[] = Object.freeze([]);

function embeddedOf(v6: string): EmbeddedIpv4 | null {
  try {
    return embeddedIpv4(toWords(ipaddr.IPv6.parse(v6).toByteArray()));
  } catch {
    return null;
  }
}

/** sha256 (hex, first 16) of the spec's canonical JSON, without file and positions: same rules, same hash. */
export function policyHash(spec: PolicySpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex').slice(0, 16);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v)
      .filter((k) => k !== 'pos' && k !== 'file' && k !== 'hash')
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
