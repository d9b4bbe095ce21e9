import { formatHostPort, parseIpEndpoint } from '../net/endpoint.js';
import { canonicalPeer } from '../net/ip.js';

/** A bad --dns-listen or --dns-server value. */
export class DnsConfigError extends Error {
  override name = 'DnsConfigError';
}

export interface Endpoint {
  host: string;
  family: 4 | 6;
  port: number;
}

/**
 * Parse "IP", "IP:PORT", "[v6]:PORT" or a bare IPv6 address. Only literal addresses: a resolver
 * that needs a resolver to find its upstream (or its own socket) would be circular.
 */
export function parseEndpoint(text: string, defaultPort: number | null): Endpoint {
  try {
    const e = parseIpEndpoint(text, { defaultPort: defaultPort ?? undefined, allowZero: true });
    return { host: e.address, family: e.family, port: e.port };
  } catch (err) {
    throw new DnsConfigError((err as Error).message);
  }
}

/** "addr:port" with IPv6 in brackets, as decision records show clients. */
export const endpointText = formatHostPort;

/**
 * The client address the policy identifies: IPv4-mapped IPv6 (from a dual-stack socket) is the IPv4
 * client it stands for, so source rules written as IPv4 CIDRs still match.
 */
export function clientAddress(raw: string): string {
  return canonicalPeer(raw);
}
