import type { Reason } from '../policy/vocabulary.js';

/**
 * RFC 9209 Proxy-Status for the answers the proxy writes itself. One table maps every reason code to
 * the registry's error type; a few reasons are refined by the low-level cause (the errno or undici
 * code, or the DNS timeout) so that a client can tell a refused connection from a timed-out one.
 */

/** The proxy's member name in Proxy-Status (an RFC 8941 token). */
export const PROXY_NAME = 'agent-egress';

/** The RFC 9209 §2.3 error types this proxy can send. */
export type ProxyErrorType =
  | 'http_request_denied'
  | 'http_request_error'
  | 'destination_ip_prohibited'
  | 'destination_unavailable'
  | 'destination_not_found'
  | 'dns_error'
  | 'dns_timeout'
  | 'connection_refused'
  | 'connection_terminated'
  | 'connection_timeout'
  | 'connection_limit_reached'
  | 'http_response_timeout'
  | 'http_protocol_error'
  | 'tls_certificate_error'
  | 'proxy_internal_error';

/**
 * Reason code → error type. `rule_allow` is never a refusal, so it has none. Reasons only the DNS filter
 * produces are mapped too, so every code has a documented token (docs/decision-log.md lists this table).
 */
export const PROXY_STATUS_ERRORS: Readonly<Record<Reason, ProxyErrorType | null>> = Object.freeze({
  rule_allow: null,
  rule_deny: 'http_request_denied',
  no_rule: 'http_request_denied',
  method_not_allowed: 'http_request_denied',
  qtype_refused: 'http_request_denied',
  auth_required: 'http_request_denied',
  private_address: 'destination_ip_prohibited',
  address_not_allowed: 'destination_ip_prohibited',
  bad_request: 'http_request_error',
  name_too_long: 'http_request_error',
  malformed: 'http_request_error',
  dns_failure: 'dns_error',
  upstream_error: 'destination_unavailable',
  upstream_timeout: 'connection_timeout',
  limit_exceeded: 'connection_limit_reached',
  rate_limited: 'connection_limit_reached',
  shutting_down: 'proxy_internal_error',
  path_not_allowed: 'http_request_denied',
  secret_not_allowed: 'http_request_denied',
  upstream_tls: 'tls_certificate_error',
  approval_required: 'http_request_denied',
  approved: null,
  approval_denied: 'http_request_denied',
  approval_timeout: 'http_request_denied',
  sni_mismatch: 'http_request_denied',
  host_mismatch: 'http_request_denied',
  protocol_not_allowed: 'http_request_denied',
  // Transparent capture: the connection never said where it goes.
  no_name: 'destination_not_found',
});

/** Causes that make an upstream failure more precise than its reason's default. */
const CAUSES: Readonly<Record<string, ProxyErrorType>> = Object.freeze({
  ECONNREFUSED: 'connection_refused',
  ECONNRESET: 'connection_terminated',
  EPIPE: 'connection_terminated',
  UND_ERR_SOCKET: 'connection_terminated',
  UND_ERR_CLOSED: 'connection_terminated',
  EHOSTUNREACH: 'destination_unavailable',
  ENETUNREACH: 'destination_unavailable',
  EHOSTDOWN: 'destination_unavailable',
  ENETDOWN: 'destination_unavailable',
  ETIMEDOUT: 'connection_timeout',
  UND_ERR_CONNECT_TIMEOUT: 'connection_timeout',
  UND_ERR_HEADERS_TIMEOUT: 'http_response_timeout',
  UND_ERR_BODY_TIMEOUT: 'http_response_timeout',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'http_protocol_error',
  HPE_INVALID_CONSTANT: 'http_protocol_error',
  HPE_INVALID_STATUS: 'http_protocol_error',
  HPE_INVALID_HEADER_TOKEN: 'http_protocol_error',
});

/** The error type for a refusal: the reason's entry, refined by the cause for DNS and upstream failures. */
export function proxyErrorType(reason: Reason, status: number, cause?: string): ProxyErrorType {
  if (reason === 'dns_failure') return status === 504 ? 'dns_timeout' : 'dns_error';
  if ((reason === 'upstream_error' || reason === 'upstream_timeout') && cause !== undefined) {
    const refined = CAUSES[cause];
    if (refined !== undefined) return refined;
  }
  // A refusal always names an error; rule_allow never reaches here, but fail towards "denied".
  return PROXY_STATUS_ERRORS[reason] ?? 'http_request_denied';
}

const MAX_DETAILS = 512;

/**
 * An RFC 8941 sf-string holds printable ASCII only, with `"` and `\` escaped. Anything else (control
 * characters, non-ASCII from a target the client sent) becomes `?`, so the header can never be split or
 * rejected, whatever the message quotes.
 */
export function sfString(text: string): string {
  let out = '"';
  const n = Math.min(text.length, MAX_DETAILS);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) out += '\\' + text[i];
    else if (c >= 0x20 && c <= 0x7e) out += text[i];
    else out += '?';
  }
  return out + '"';
}

/** The Proxy-Status field value: this proxy as the only member, with the error type and the details. */
export function proxyStatusValue(error: ProxyErrorType, details: string): string {
  return `${PROXY_NAME}; error=${error}; details=${sfString(details)}`;
}
