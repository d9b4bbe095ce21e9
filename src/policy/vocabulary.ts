/**
 * The vocabulary of a decision: what the policy can answer (verdict), why (reason) and whether it is
 * enforced (mode). It belongs to the policy; the decision log, the proxy and the DNS filter speak it.
 */

/**
 * The fixed set of reason codes a decision can carry. Every entry point (CONNECT, HTTP, DNS, `check`)
 * uses these and only these, so queries and alerts can group on them. docs/decision-log.md documents each.
 */
export const REASONS = [
  'rule_allow', // an allow rule matched and no deny rule did
  'rule_deny', // a deny rule matched (deny wins)
  'no_rule', // no allow rule matched (default deny)
  'private_address', // no resolved address was usable and the address guard refused at least one of them
  'address_not_allowed', // the name matched, but its addresses lie outside the rule's CIDRs (or inside a denied CIDR)
  'auth_required', // credentials missing or wrong (407)
  'bad_request', // malformed request or target (400)
  'dns_failure', // resolution failed or timed out
  'upstream_error', // upstream refused, reset or failed (502)
  'upstream_timeout', // upstream did not answer in time (504)
  'limit_exceeded', // a connection limit was hit (503)
  'method_not_allowed', // the host matched, but the rule does not allow this HTTP method
  'qtype_refused', // DNS: the query type is not allowed for this name
  'name_too_long', // DNS: label or name over the limits
  'rate_limited', // DNS: the client exceeded its query rate
  'malformed', // DNS: the packet could not be parsed
  'shutting_down', // the proxy was draining and refused new work
  'path_not_allowed', // the host matched, but the rule's paths, query or header matchers do not allow this request
  'secret_not_allowed', // the request carries a secret's placeholder that the deciding rule does not broker
  'upstream_tls', // the origin's TLS certificate failed verification (inspected tunnels)
  'approval_required', // an ask rule (or on_no_match: ask) matched where no approval could be held (check, inside an inspected tunnel, --workers)
  'approved', // an ask was held and a person approved it
  'approval_denied', // an ask was held and a person denied it, or the pending-approval bound was full
  'approval_timeout', // an ask was held and nobody decided within --approval-timeout
  'sni_mismatch', // a tunnel's TLS ClientHello names another server than the one authorised
  'host_mismatch', // a tunnel's plain HTTP request names another Host than the one authorised
  'protocol_not_allowed', // a tunnel carries a protocol its rule does not allow (or nothing recognisable in time)
  'no_name', // transparent capture: the connection offered no name (no SNI, no Host) within the header timeout
] as const;
export type Reason = (typeof REASONS)[number];

/**
 * What an opaque tunnel may carry (a rule's `protocols`). The first bytes are checked against them:
 * `tls` a ClientHello (its SNI must match), `http` a request head (its Host must match), `ssh` an SSH
 * banner; `any` turns the check off (server-speaks-first protocols, custom ones).
 */
export const TUNNEL_PROTOCOLS = ['tls', 'http', 'ssh', 'any'] as const;
export type TunnelProtocol = (typeof TUNNEL_PROTOCOLS)[number];
/** Rules without `protocols`. */
export const DEFAULT_TUNNEL_PROTOCOLS: readonly TunnelProtocol[] = Object.freeze(['tls', 'http']);

export type Verdict = 'allow' | 'deny';
export type Mode = 'enforce' | 'report';
