import type { Socket } from 'node:net';
import type { ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { isFailure } from '../decisions/attribution.js';
import type { Reason } from '../policy/vocabulary.js';
import { proxyErrorType, proxyStatusValue } from './proxy-status.js';

/** Why a request was refused, in words a person fixing their agent can act on. */
const EXPLAIN: Partial<Record<Reason, string>> = {
  rule_deny: 'a deny rule matches this destination',
  no_rule: 'no rule of the policy allows this destination',
  method_not_allowed: 'the policy does not allow this method for this destination',
  private_address: 'the destination resolves only to private, loopback, link-local or metadata addresses',
  address_not_allowed: "the destination resolves outside the addresses its rule allows",
  auth_required: 'proxy credentials are required or were not accepted',
  bad_request: 'the request or its target is malformed',
  dns_failure: 'the destination name could not be resolved',
  upstream_error: 'the destination refused or reset the connection',
  upstream_timeout: 'the destination did not answer in time',
  limit_exceeded: 'too many concurrent connections',
  shutting_down: 'the proxy is shutting down',
  approval_required: 'this destination needs an approval, which cannot be asked for here',
  approval_denied: 'an approver denied this destination',
  approval_timeout: 'nobody approved this destination in time',
};

export interface Refusal {
  status: number;
  reason: Reason;
  /** Extra one-line detail, safe to show (never request headers or credentials). */
  message?: string;
  decisionId?: string;
  rule?: string | null;
  target?: string;
  /** The low-level cause of an upstream failure (errno or undici code), to pick the precise Proxy-Status error. */
  cause?: string;
  /** What would be allowed instead ("example.com is allowed on port 443 only"), appended to the why. */
  hint?: string;
}

function why(r: Refusal): string {
  const why = r.message ?? EXPLAIN[r.reason] ?? r.reason;
  return r.hint ? `${why}: ${r.hint}` : why;
}

/** "(reason …, rule …, decision …)": the same words in the body and in Proxy-Status details. */
function trace(r: Refusal): string {
  return r.decisionId ? ` (reason ${r.reason}${r.rule ? `, rule ${r.rule}` : ''}, decision ${r.decisionId})` : ` (reason ${r.reason})`;
}

function bodyFor(r: Refusal, json: boolean): { type: string; body: string } {
  if (json) {
    return {
      type: 'application/json',
      body: JSON.stringify({ error: why(r), reason: r.reason, rule: r.rule ?? null, target: r.target ?? null, decision: r.decisionId ?? null }) + '\n',
    };
  }
  // A failed lookup or connection is an error, not a refusal: the policy said yes.
  const verb = isFailure(r.reason) ? 'could not reach' : 'refused';
  const head = r.target ? `agent-egress ${verb} ${r.target}: ` : 'agent-egress: ';
  return { type: 'text/plain; charset=utf-8', body: `${head}${why(r)}${trace(r)}\n` };
}

function extraHeaders(r: Refusal): [string, string][] {
  const h: [string, string][] = [['X-Agent-Egress-Reason', r.reason]];
  if (r.decisionId) h.push(['X-Agent-Egress-Decision', r.decisionId]);
  h.push(['Proxy-Status', proxyStatusValue(proxyErrorType(r.reason, r.status, r.cause), why(r) + trace(r))]);
  if (r.status === 407) h.push(['Proxy-Authenticate', 'Basic realm="agent-egress"']);
  if (r.status === 503) h.push(['Retry-After', '1']);
  return h;
}

export function wantsJson(accept: string | string[] | undefined): boolean {
  const a = Array.isArray(accept) ? accept.join(',') : accept;
  return !!a && a.includes('application/json');
}

/** Answer on a raw socket (CONNECT, upgrade, or before any request was parsed) and close it. */
export function refuseSocket(socket: Socket, r: Refusal, json = false): void {
  if (socket.destroyed) return;
  const { type, body } = bodyFor(r, json);
  const lines = [
    `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'Error'}`,
    `Content-Type: ${type}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...extraHeaders(r).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(lines.join('\r\n') + '\r\n\r\n' + body);
  // A client that never reads must not hold the socket open.
  socket.setTimeout(5_000, () => socket.destroy());
}

/** Answer a parsed plain-HTTP request. Keep-alive is kept only when the refusal is not about the connection itself. */
export function refuseResponse(res: ServerResponse, r: Refusal, json = false, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { type, body } = bodyFor(r, json);
  const headers: Record<string, string | number> = { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) };
  for (const [k, v] of extraHeaders(r)) headers[k] = v;
  if (close) headers.Connection = 'close';
  res.writeHead(r.status, headers);
  res.end(body);
}
