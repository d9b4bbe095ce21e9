import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import { forwardResponseHeaders } from './headers.js';

/** The comma-separated protocol tokens of an Upgrade header, lower-cased ("websocket", "h2c", …). */
export function upgradeTokens(value: string | string[] | undefined): string[] {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
}

/**
 * A 101 switches to what was asked only: the origin's Upgrade must name at least one protocol and each
 * one it names must be one the client offered. Anything else is not a switch the proxy may splice.
 */
export function upgradeMatches(asked: string[], answered: string | string[] | undefined): boolean {
  const got = upgradeTokens(answered);
  return got.length > 0 && got.every((t) => asked.includes(t));
}

export type UpgradeAnswer =
  /** 101 with a matching Upgrade: the upstream socket (switched) and any bytes it sent past the head. */
  | { kind: 'switched'; res: IncomingMessage; socket: Socket; head: Buffer }
  /** A 101 whose Upgrade does not match the request (or a switch without 101): never spliced. */
  | { kind: 'mismatch'; res: IncomingMessage; socket: Socket }
  /** Any other final response: to be relayed as an ordinary response. */
  | { kind: 'response'; res: IncomingMessage };

/**
 * Send the upgrade request over an already-connected, vetted upstream socket and wait for the origin's
 * final answer. Node's strict client parser reads the answer (and frames its body), so the proxy never
 * guesses where a response ends.
 */
export function sendUpgrade(
  upstream: Socket,
  o: { method: string; path: string; headers: string[]; asked: string[]; timeoutMs: number },
): Promise<UpgradeAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      createConnection: () => upstream,
      method: o.method,
      path: o.path,
      headers: o.headers,
      setHost: false,
    });
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      // llhttp also ends the message at a body-less answer carrying Connection: upgrade (a 200, say):
      // only a 101 switches protocols.
      const ok = res.statusCode === 101 && upgradeMatches(o.asked, res.headers.upgrade);
      resolve(ok ? { kind: 'switched', res, socket, head } : { kind: 'mismatch', res, socket });
    });
    // A 101 without Upgrade/Connection headers arrives here as an ordinary response: still a switch
    // that was not agreed, never relayed as if it were a normal answer.
    req.on('response', (res) => resolve(res.statusCode === 101 ? { kind: 'mismatch', res, socket: upstream } : { kind: 'response', res }));
    req.on('error', reject);
    if (o.timeoutMs > 0) req.setTimeout(o.timeoutMs, () => req.destroy(new UpgradeTimeoutError()));
    req.end();
  });
}

export class UpgradeTimeoutError extends Error {
  override name = 'UpgradeTimeoutError';
  constructor() {
    super('the origin did not answer the upgrade request in time');
  }
}

/** Statuses (and HEAD) whose responses have no body, whatever their headers say (RFC 9112 §6.3). */
function bodiless(method: string, status: number): boolean {
  return method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
}

/**
 * The head of an ordinary response, re-framed for the client: Content-Length is kept when the origin
 * sent one, otherwise the body goes chunked. Hop-by-hop headers are dropped as on the forward path.
 */
export function responseHead(method: string, res: IncomingMessage, extra: Record<string, string>): { head: string; chunked: boolean } {
  const status = res.statusCode ?? 502;
  const headers = forwardResponseHeaders(res.headers);
  const noBody = bodiless(method, status);
  const chunked = !noBody && headers['content-length'] === undefined;
  const lines = [`HTTP/1.1 ${status} ${sanitize(res.statusMessage || STATUS_CODES[status] || '')}`];
  for (const k in headers) {
    const v = headers[k];
    for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`);
  }
  if (chunked) lines.push('transfer-encoding: chunked');
  for (const k in extra) lines.push(`${k}: ${extra[k]}`);
  return { head: lines.join('\r\n') + '\r\n\r\n', chunked };
}

/** A reason phrase is the origin's text: keep it to visible characters so it cannot split the head. */
function sanitize(s: string): string {
  return s.replace(/[^\t\x20-\x7e]/g, '');
}
