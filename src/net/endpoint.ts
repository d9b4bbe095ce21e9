import { isIP } from 'node:net';
import { canonicalIp, type IpFamily } from './ip.js';

/** A bad HOST:PORT value; callers re-throw it as their own configuration error. */
export class EndpointError extends Error {
  override name = 'EndpointError';
}

/**
 * Split "host:port", "[v6]:port", "[v6]", a bare IPv6 address or a bare host. Only brackets or a single
 * colon separate a port: "fd00::1" and "fd00::/64" stay whole, so IPv6 is never cut at a colon.
 */
export function splitHostPort(text: string): { host: string; port: string | null } {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1) throw new EndpointError(`unterminated IPv6 literal in ${JSON.stringify(text)}`);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new EndpointError(`expected ":PORT" after "]" in ${JSON.stringify(text)}`);
    return { host: text.slice(1, close), port: rest === '' ? null : rest.slice(1) };
  }
  const first = text.indexOf(':');
  if (first === -1 || first !== text.lastIndexOf(':')) return { host: text, port: null };
  return { host: text.slice(0, first), port: text.slice(first + 1) };
}

export function parsePort(text: string, ctx: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535 || (!allowZero && Number(text) === 0)) {
    throw new EndpointError(`bad port ${JSON.stringify(text)} in ${JSON.stringify(ctx)}`);
  }
  return Number(text);
}

export interface EndpointOptions {
  /** Used when the text names no port; without it a port is required. */
  defaultPort?: number;
  /** Port 0 (pick a free port) is fine for listeners, never for destinations. */
  allowZero?: boolean;
}

/** HOST:PORT where HOST may be a name, an address or empty (":3128"). */
export function parseHostPort(text: string, opts: EndpointOptions = {}): { host: string; port: number } {
  const t = text.trim();
  const { host, port } = splitHostPort(t);
  if (port === null) {
    if (opts.defaultPort === undefined) throw new EndpointError(`a port is required: HOST:PORT or [IPv6]:PORT, got ${JSON.stringify(text)}`);
    return { host, port: opts.defaultPort };
  }
  if (/[\s/@[\]]/.test(host)) throw new EndpointError(`bad host in ${JSON.stringify(text)}`);
  return { host, port: parsePort(port, t, opts.allowZero) };
}

/**
 * IP:PORT with a literal address only, canonicalised: a resolver's own upstream, a firewall rule or
 * a listener must not depend on a lookup (circular, or silently stale).
 */
export function parseIpEndpoint(text: string, opts: EndpointOptions = {}): { address: string; family: IpFamily; port: number } {
  const { host, port } = parseHostPort(text, opts);
  // Strict spelling (isIP): in configuration, "1.2.3" is a typo, not the address 1.2.0.3.
  const ip = isIP(host) === 0 ? null : canonicalIp(host);
  if (!ip || host.includes('%')) throw new EndpointError(`not an IP address: ${JSON.stringify(text)}`);
  return { address: ip.address, family: ip.family, port };
}

/** "addr:port" with IPv6 in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Only literal loopback addresses and "localhost" count; anything else might be reachable from outside. */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const ip = canonicalIp(host);
  if (!ip) return false;
  return ip.family === 4 ? ip.address.startsWith('127.') : ip.address === '::1';
}
