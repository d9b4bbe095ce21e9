import { checkQuery, normalizePath, PathError } from '../net/path.js';
import { broker } from '../policy/secrets.js';
import type { VetContext, VetOutcome } from './vet.js';

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
