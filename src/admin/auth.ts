import { parseHostPort } from '../net/endpoint.js';
import { secretEquals } from './session.js';

/** Constant-time bearer check: both sides hashed first so lengths never leak through timing. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return secretEquals(m ? m[1] : undefined, token);
}

export class AdminConfigError extends Error {
  override name = 'AdminConfigError';
}

/** "127.0.0.1:3129", "[::1]:3129", "localhost:3129" to host and port. */
export function parseListen(listen: string): { host: string; port: number } {
  try {
    return parseHostPort(listen, { allowZero: true });
  } catch (err) {
    throw new AdminConfigError(`admin listen address: ${(err as Error).message}`);
  }
}


/**
 * The start-up refusals of the admin API, apart from the server so they can run before it is loaded:
 * no token on a non-loopback address, no token without an explicit open, and a viewer token that is
 * missing its admin token or equal to it.
 */
export function assertAdminAuthConfig(
  listen: string,
  token: string | undefined,
  open: boolean | undefined,
  isLoopback: (host: string) => boolean,
  viewerToken?: string,
): { host: string; port: number } {
  const { host, port } = parseListen(listen);
  if (!token && !isLoopback(host)) {
    throw new AdminConfigError(
      `refusing to start the admin API on ${listen} without a token: set --admin-token or AGENT_EGRESS_ADMIN_TOKEN, or listen on 127.0.0.1`,
    );
  }
  // Fail closed: no token means an open API only when the caller said so, never by omission.
  if (!token && !open) throw new AdminConfigError('the admin API needs a token (or an explicit --no-admin-auth)');
  if (viewerToken && !token) throw new AdminConfigError('a viewer token needs an admin token next to it (not --no-admin-auth)');
  if (viewerToken && viewerToken === token) throw new AdminConfigError('the viewer token must differ from the admin token');
  return { host, port };
}
