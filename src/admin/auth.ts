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

