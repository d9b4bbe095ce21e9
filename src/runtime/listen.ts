import { formatHostPort, parseHostPort } from '../net/endpoint.js';

/** "127.0.0.1:3128", "[::1]:3128", "0.0.0.0:3128", ":3128" (all IPv4 interfaces) -> host and port. */
export function parseListen(text: string): { host: string; port: number } {
  const { host, port } = parseHostPort(text, { allowZero: true });
  return { host: host || '0.0.0.0', port };
}


export function formatListen(a: { address: string; port: number }): string {
  return formatHostPort(a.address, a.port);
}
