import { createHash, timingSafeEqual } from 'node:crypto';
import { canonicalIp } from '../net/ip.js';

/** Constant-time bearer check: both sides hashed first so lengths never leak through timing. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  const given = createHash('sha256').update(m ? m[1] : '').digest();
  const want = createHash('sha256').update(token).digest();
  return timingSafeEqual(given, want) && m !== null;
}

export class AdminConfigError extends Error {
  override name = 'AdminConfigError';
}

/** "127.0.0.1:3129", "[::1]:3129", "localhost:3129" to host and port. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new AdminConfigError(`admin listen address must be HOST:PORT, got ${JSON.stringify(listen)}`);
  return { host: m[1] ?? m[2], port };
}

/** Only literal loopback addresses and "localhost" count; anything else might be reachable from outside. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const ip = canonicalIp(host);
  if (!ip) return false;
  return ip.family === 4 ? ip.address.startsWith('127.') : ip.address === '::1';
}
