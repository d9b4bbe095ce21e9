import { createSocket } from 'node:dgram';
import { startHttpOrigin } from './origin.js';

/** A Proxy-Authorization header line (Basic), CRLF included. */
export const basicAuth = (u: string, p: string): string => `Proxy-Authorization: Basic ${Buffer.from(`${u}:${p}`).toString('base64')}\r\n`;

/** A CONNECT request head; `extra` is more header lines, each ending in CRLF. */
export const connectRequest = (authority: string, extra = ''): string => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`;

/** An absolute-form GET that closes the connection after the answer. */
export const getRequest = (url: string, extra = ''): string => `GET ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\n${extra}Connection: close\r\n\r\n`;

/** A port that was just free: nothing listens there, so connects to it are refused. */
export async function freedPort(): Promise<number> {
  const tmp = await startHttpOrigin();
  await tmp.close();
  return tmp.port;
}

/** A UDP socket on loopback that never answers: an upstream DNS server that times out. */
export async function silentUdp(): Promise<{ port: number; close(): void }> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return { port: s.address().port, close: () => s.close() };
}
