import { checkQuery, normalizePath, PathError } from '../net/path.js';
import { broker } from '../policy/secrets.js';
import type { Target } from '../net/target.js';
import type { HttpFacts } from '../policy/request-rules.js';
import type { CompiledPolicy, PolicyDecision } from '../policy/types.js';
import { decideTunnel, type VetContext, type VetOutcome } from './vet.js';

/** The request path as rules judge it and the proxy forwards it, or why it is refused (400). */
export function normalizeRequestPath(path: string, query: string): { ok: true; path: string } | { ok: false; message: string } {
  try {
    const p = normalizePath(path);
    checkQuery(query);
    return { ok: true, path: p };
  } catch (err) {
    if (err instanceof PathError) return { ok: false, message: `bad request path: ${err.message}` };
    throw err;
  }
}

export type Brokered =
  | { ok: true; headers: string[]; secrets: string[]; report: boolean }
  | { ok: false; secret: string };

/**
 * Credential brokering for an allowed request (plain HTTP and inspected alike): the deciding rule's
 * secrets are filled in, a placeholder of any other secret refuses the request (`secret_not_allowed`).
 * In report mode that refusal is only recorded (`report: true`) and the request goes as sent.
 */
export function brokerRequest(ctx: VetContext, v: VetOutcome & { ok: true }, headers: string[], target: string): Brokered {
  const b = broker(ctx.policy.secrets, v.decision?.effects, headers, target);
  if (b.ok) return { ok: true, headers: b.headers, secrets: b.used, report: false };
  if (v.mode === 'report') return { ok: true, headers, secrets: [], report: true };
  return { ok: false, secret: b.secret };
}

/**
 * What the proxy would decide for one request as `check` describes it: a plain request with its method
 * and path; or a CONNECT, and, when its deciding rule inspects, the request inside it (method and path).
 * The same decide() calls, in the same order, as the CONNECT handler and the inspected tunnel make.
 */
export function decideAsProxy(
  policy: CompiledPolicy,
  agent: string | null,
  asked: { target: Target; via: 'http' | 'connect'; method?: string; path?: string; query?: string },
  headers: HttpFacts['headers'] = {},
): { decision: PolicyDecision; inspected: boolean; path?: string } {
  const { target } = asked;
  const inner = (method: string): { decision: PolicyDecision; path?: string } => {
    const np = normalizeRequestPath(asked.path ?? '/', asked.query ?? '');
    if (!np.ok) return { decision: { verdict: 'deny', reason: 'bad_request', rule: null, mode: 'enforce', constraint: null } };
    const http = { path: np.path, query: asked.query ?? '', headers };
    return { decision: policy.decide({ agent, host: target.host, port: target.port, method, http }), path: np.path };
  };
  if (asked.via === 'http') return { ...inner(asked.method ?? 'GET'), inspected: false };
  const tunnel = decideTunnel(policy, agent, target);
  if (tunnel.verdict !== 'allow' || !tunnel.effects?.inspect) return { decision: tunnel, inspected: false };
  return { ...inner(asked.method ?? 'GET'), inspected: true };
}
