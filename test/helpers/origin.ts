import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  bodyBytes: number;
}

export interface Origin {
  port: number;
  url: string;
  seen: SeenRequest[];
  server: Server;
  close(): Promise<void>;
}

/**
 * A real origin on 127.0.0.1. Routes: /echo (JSON of what it saw), /bytes/N (N bytes), /redirect,
 * /slow (never answers), /upload (counts the body), anything else 200 "hello".
 */
function handler(seen: SeenRequest[]) {
  return (req: IncomingMessage, res: ServerResponse) => {
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => (bodyBytes += c.length));
    req.on('end', () => {
      const s = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes };
      seen.push(s);
      const u = req.url ?? '/';
      if (u.startsWith('/echo')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(s));
      } else if (u.startsWith('/bytes/')) {
        const n = Number(u.slice(7));
        res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(64 * 1024, 97);
        let left = n;
        const pump = () => {
          while (left > 0) {
            const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
            left -= c.length;
            if (!res.write(c)) return res.once('drain', pump);
          }
          res.end();
        };
        pump();
      } else if (u.startsWith('/redirect')) {
        res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
        res.end();
      } else if (u.startsWith('/slow')) {
        // never answers: for upstream timeouts
      } else {
        res.setHeader('x-origin', 'yes');
        res.end('hello');
      }
    });
  };
}

export async function startHttpOrigin(host = '127.0.0.1'): Promise<Origin> {
  const seen: SeenRequest[] = [];
  const server = createHttpServer(handler(seen));
  server.on('upgrade', (req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    socket.on('data', (d) => socket.write(d));
    socket.on('end', () => socket.end());
    socket.on('error', () => socket.destroy());
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: 0 });
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return { port, url: `http://${host}:${port}`, seen, server, close: () => closeServer(server) };
}

let certCache: { key: Buffer; cert: Buffer } | null = null;
/** A throwaway self-signed certificate for localhost/127.0.0.1 and the test names, made with openssl. */
export function testCert(): { key: Buffer; cert: Buffer } {
  if (certCache) return certCache;
  const dir = mkdtempSync(join(tmpdir(), 'ae-cert-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,DNS:allowed.test,DNS:*.allowed.test,IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
  ], { stdio: 'ignore' });
  certCache = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  return certCache;
}

export async function startHttpsOrigin(host = '127.0.0.1'): Promise<Origin> {
  const seen: SeenRequest[] = [];
  const server = createHttpsServer(testCert(), handler(seen));
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return { port, url: `https://${host}:${port}`, seen, server: server as unknown as Server, close: () => closeServer(server as unknown as Server) };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((r) => {
    server.closeAllConnections?.();
    server.close(() => r());
  });
}
