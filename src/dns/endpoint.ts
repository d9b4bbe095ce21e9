import { parseIpEndpoint } from '../net/endpoint.js';

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
