import { isIP } from 'node:net';
import { canonicalIp } from '../net/ip.js';

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
  let host: string;
  let portText: string | null = null;
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end === -1) throw new DnsConfigError(`unterminated IPv6 literal in ${JSON.stringify(text)}`);
    host = text.slice(1, end);
    const rest = text.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new DnsConfigError(`expected ":PORT" after "]" in ${JSON.stringify(text)}`);
      portText = rest.slice(1);
    }
  } else if (isIP(text) === 6) {
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon === -1) host = text;
    else {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    }
  }
  const ip = canonicalIp(host);
  if (!ip || isIP(host) === 0) throw new DnsConfigError(`not an IP address: ${JSON.stringify(text)}`);
  let port: number;
  if (portText === null) {
    if (defaultPort === null) throw new DnsConfigError(`a port is required in ${JSON.stringify(text)}`);
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new DnsConfigError(`bad port in ${JSON.stringify(text)}`);
    }
    port = Number(portText);
  }
  return { host: ip.address, family: ip.family, port };
}

/** "addr:port" with IPv6 in brackets, as decision records show clients. */
export function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * The client address the policy identifies: IPv4-mapped IPv6 (from a dual-stack socket) is the IPv4
 * client it stands for, so source rules written as IPv4 CIDRs still match.
 */
export function clientAddress(raw: string): string {
  const ip = canonicalIp(raw);
  if (!ip) return raw;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(raw);
  if (m) return m[1];
  if (ip.family === 6 && /^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/i.test(ip.address)) {
    const hex = ip.address.slice(7).split(':').map((h) => parseInt(h, 16));
    return `${hex[0] >> 8}.${hex[0] & 0xff}.${hex[1] >> 8}.${hex[1] & 0xff}`;
  }
  return ip.address;
}
