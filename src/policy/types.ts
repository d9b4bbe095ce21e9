import type { Mode, Reason, TunnelProtocol, Verdict } from './vocabulary.js';
import type { NormalizedHost } from '../net/host.js';
import type { HttpFacts, RequestRuleSpec } from './request-rules.js';
import type { SecretTable } from './secrets.js';

/** A port range, inclusive. A single port p is [p, p]. */
export type PortRange = readonly [number, number];

/** Where in which file a policy element was written, for error messages and `check` output. */
export interface SourcePos {
  file: string;
  line: number;
}

/** One rule as written (after validation and normalisation of its patterns). */
export interface RuleSpec {
  name: string;
  /** `ask`: hold the request for a person to approve (deny > allow > ask). */
  action: 'allow' | 'deny' | 'ask';
  /** Normalised host patterns: exact names, `*.suffix`, mid-label globs, or the deliberate `*`. */
  hosts: string[];
  /** CIDRs in canonical form (IPv4 and IPv6). */
  cidrs: string[];
  /** null = the default (allow rules: 443 only; deny rules: every port). */
  ports: PortRange[] | null;
  /**
   * Upper-case HTTP methods; null = any. They judge requests whose method the proxy sees (plain HTTP,
   * Upgrade). A tunnel the proxy cannot see into is refused by a rule with methods (fail closed).
   */
  methods: string[] | null;
  /** Extra DNS query types this rule enables in the filtering resolver (e.g. TXT); null = none. */
  dnsTypes: string[] | null;
  /** Path, query and header matchers (src/policy/request-rules.ts); all null = not constrained. */
  request: RequestRuleSpec;
  /** Allow rules: terminate TLS inside a CONNECT this rule decides, so request rules apply inside. */
  inspect: boolean;
  /** Allow rules: secrets whose placeholders are replaced by their values in requests this rule allows. */
  secrets: string[];
  /** Allow rules: request headers set (replaced) on requests this rule allows; values may name a secret. */
  setHeaders: HeaderSetting[];
  /** Allow rules: what an opaque tunnel this rule decides may carry; null = the default (tls, http). */
  protocols: TunnelProtocol[] | null;
  pos: SourcePos;
}

/** A header a rule sets: the value is literal text with `${secret:NAME}` references. */
export interface HeaderSetting {
  name: string;
  value: string;
}

/** A secret as written: where its value comes from (never the value) and the placeholder agents hold. */
export interface SecretSpec {
  name: string;
  env: string | null;
  /** Absolute path (resolved against the policy file's directory). */
  file: string | null;
  placeholder: string;
  pos: SourcePos;
}

/** What the deciding allow rule asks of the request beyond letting it through. */
export interface RuleEffects {
  inspect: boolean;
  secrets: readonly string[];
  setHeaders: readonly HeaderSetting[];
  /** What an opaque tunnel may carry (the tunnel content check); absent = the default (tls, http). */
  protocols?: readonly TunnelProtocol[];
}

export interface AgentSpec {
  name: string;
  /** Overrides the policy mode for this agent. */
  mode: Mode | null;
  /** Lower-case hex SHA-256 of the agent's token, or null. */
  tokenSha256: string | null;
  /** Name of the environment variable holding the token, or null. */
  tokenEnv: string | null;
  /** Source CIDRs that identify this agent without credentials. */
  sources: string[];
  /** Client-certificate subject CN or SAN values that identify this agent on a TLS listener. */
  certNames: string[];
  /** Whether the shared (top-level) rules apply to this agent too. Default true. */
  sharedRules: boolean;
  rules: RuleSpec[];
  /** Overrides the policy's on_no_match for this agent; undefined = inherit. */
  onNoMatch?: OnNoMatch;
  pos: SourcePos;
}

/** What a request that no rule matches gets: denied (the default), or held for an approval. */
export type OnNoMatch = 'deny' | 'ask';

export interface PolicySpec {
  /** File the policy came from ('<flags>' for a policy built only from CLI flags). */
  file: string;
  /** sha256 (hex, first 16 chars) of the canonical JSON of the spec; recorded with every decision. */
  hash: string;
  mode: Mode;
  requireAuth: boolean;
  /** 'ask': a request no rule matches is held for an approval; undefined = deny (kept out of the hash when unset). */
  onNoMatch?: OnNoMatch;
  /** CIDRs the address guard lets through (explicit exemptions). */
  guardExempt: string[];
  rules: RuleSpec[];
  agents: AgentSpec[];
  secrets: SecretSpec[];
  /** The inspection CA from the policy (paths resolved against the policy file), or null. */
  inspection: { ca: string; caKey: string; pos: SourcePos } | null;
}

/** What an entry point asks the policy. */
export interface DecisionRequest {
  /** Identified agent name, or null for an anonymous client (shared rules only). */
  agent: string | null;
  host: NormalizedHost;
  /** Destination port; null for DNS (ports do not apply). */
  port: number | null;
  /** HTTP method for plain HTTP and Upgrade; undefined (or CONNECT) for a tunnel and DNS. */
  method?: string;
  /**
   * For a tunnel (no method, not DNS): whether the requests inside will be seen. Absent or 'opaque':
   * they will not, so the tunnel may carry any method and a deciding rule that constrains methods
   * refuses it (`method_not_allowed`). 'inspected': each inner request is decided again with its
   * method, so the tunnel itself is judged like DNS (methods do not refuse it).
   */
  tunnel?: 'opaque' | 'inspected';
  /** DNS query type (A, AAAA, TXT, …); only for DNS. */
  qtype?: string;
  /** Path, query and headers of an HTTP request (plain or inspected); rules with request matchers need it. */
  http?: HttpFacts;
}

/** The pure decision before any resolution. */
export interface PolicyDecision {
  verdict: Verdict;
  reason: Reason;
  /** Name of the deciding rule (the deny rule that won, or the first allow rule that matched). */
  rule: string | null;
  mode: Mode;
  /**
   * For an allowed name: the address constraints to apply after resolution (opaque to callers,
   * pass back to vetAddresses). null when nothing is to be checked beyond the address guard.
   */
  constraint: AddressConstraint | null;
  /** For an allow: what the deciding rule asks (inspection, secrets, headers); null for a deny. */
  effects?: RuleEffects | null;
  /**
   * Set on an ask (an ask rule matched, or on_no_match: ask): the verdict is deny with reason
   * `approval_required`, so a caller that cannot hold a request refuses it (fail closed); the proxy
   * and the DNS filter hold it for an approval instead.
   */
  ask?: true;
}

export interface AddressConstraint {
  /** When non-null, a resolved address must lie in one of these (from matching allow rules that name CIDRs). */
  allowCidrs: string[] | null;
  /** Resolved addresses inside these are refused (from matching deny rules with CIDRs). */
  denyCidrs: string[];
  /** Rule names behind the constraint, for the record. */
  rules: string[];
}

/** Result of identifying the agent behind a request. */
export type Identity =
  | { ok: true; agent: string | null }
  | { ok: false; reason: 'auth_required'; message: string };

export interface IdentifyInput {
  /** From Proxy-Authorization Basic, when present. */
  username?: string;
  password?: string;
  /** Whether a Proxy-Authorization header was present at all (even if unparseable). */
  authPresent: boolean;
  /** Client IP address (canonical). */
  sourceAddress: string;
  /** Verified client-certificate names (CN and SANs), on a TLS listener with --client-ca. */
  certNames?: string[];
}

export class PolicyError extends Error {
  constructor(
    readonly errors: { file: string; line: number; column: number; message: string }[],
  ) {
    super(errors.map((e) => `${e.file}:${e.line}:${e.column}: ${e.message}`).join('\n'));
    this.name = 'PolicyError';
  }
}

/** A policy compiled for fast, pure decisions (indexes built once, globs compiled once). */
export interface CompiledPolicy {
  readonly spec: PolicySpec;
  readonly hash: string;
  /** The pure decision: no I/O, no clock, no randomness. Every entry point calls this. */
  decide(req: DecisionRequest): PolicyDecision;
  /**
   * After resolution: which of the resolved (canonical) addresses the deciding rules accept
   * (allow-rule CIDRs, deny-rule CIDRs). The address guard is separate (net/guard).
   */
  vetAddresses(constraint: AddressConstraint | null, addresses: string[]): { allowed: string[]; refused: string[] };
  /** Who is asking: Proxy-Authorization, then client certificate, then source CIDRs. */
  identify(input: IdentifyInput): Identity;
  /** The mode in force for an agent (agent override, else the policy's). */
  modeFor(agent: string | null): Mode;
  /** The secrets' placeholders and (when loaded) values; values never leave it except into a request. */
  readonly secrets: SecretTable;
}
