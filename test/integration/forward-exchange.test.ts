import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { openRaw } from '../helpers/raw.js';

/**
 * The plain-HTTP forward path's upstream exchange (src/proxy/exchange.ts): what happens to the upstream
 * request when the client leaves, that a slow reader slows the origin down instead of filling memory,
 * and that bytes both ways are counted in the record.
 */

let origin: Server;
let port: number;
let proxy: TestProxy;
/** Per path: resolves when the origin's side of that request closed before its answer was complete. */
const upstreamClosed = new Map<string, Promise<boolean>>();
/** Per /big/ path: body bytes the origin has handed to its socket so far. */
const originSent = new Map<string, number>();

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? '/';
  upstreamClosed.set(url, new Promise((r) => res.on('close', () => r(!res.writableFinished))));
  if (url.startsWith('/hold')) return; // never answers
  if (url.startsWith('/hop')) {
    // Connection names a header as hop-by-hop, in any case and beside keep-alive, or says only keep-alive.
    const conn = url === '/hop/named' ? 'Keep-Alive, X-Resp-Hop' : 'keep-alive';
    res.writeHead(200, { Connection: conn, 'X-Resp-Hop': 'drop-me', 'X-Kept': 'yes', 'Content-Length': '2' });
    res.end('ok');
    return;
  }
  if (url.startsWith('/trickle')) {
    // Head and one chunk, then nothing: the client sees the answer start and leaves.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first chunk\n');
    return;
  }
  if (url.startsWith('/big/')) {
    const n = Number(url.slice(5));
    res.writeHead(200, { 'content-length': n });
    const chunk = Buffer.alloc(64 * 1024, 98);
    let left = n;
    const pump = (): void => {
      while (left > 0) {
        const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= c.length;
        originSent.set(url, n - left);
        if (!res.write(c)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return;
  }
  let got = 0;
  req.on('data', (c: Buffer) => (got += c.length));
  req.on('end', () => res.end(`got ${got}`));
}

beforeAll(async () => {
  origin = createServer(onRequest);
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  port = (origin.address() as AddressInfo).port;
  proxy = await startTestProxy({ flags: { allow: [`127.0.0.1/32:${port}`], deny: [], allowAddress: ['127.0.0.1/32'] }, limits: { requestIdleMs: 20_000 } });
});

afterAll(async () => {
  await proxy?.close();
  origin.closeAllConnections();
  await new Promise((r) => origin.close(r));
});

/** Wait until the origin has the request; then its promise says whether it was closed before its answer completed. */
const originHas = async (path: string, ms = 5_000): Promise<{ closed: Promise<boolean> }> => {
  const end = Date.now() + ms;
  for (;;) {
    const closed = upstreamClosed.get(path);
    if (closed) return { closed };
    if (Date.now() > end) throw new Error(`the origin never got ${path}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};
/** Settles to false when the origin's request is still open after `ms`. */
const within = (p: Promise<boolean>, ms = 5_000): Promise<boolean> => Promise.race([p, new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

describe('a client that leaves aborts the upstream request', () => {
  it('before the origin answered: the origin sees its request closed, and the record is written', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://127.0.0.1:${port}/hold/1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    const { closed } = await originHas('/hold/1');
    s.socket.destroy();
    // Well before the 20 s idle deadline that would otherwise end the upstream request.
    expect(await within(closed)).toBe(true);
    const rec = await proxy.sink.waitFor((r) => r.path === '/hold/1');
    expect(rec).toMatchObject({ verdict: 'allow', bytesDown: 0, address: '127.0.0.1' });
    expect(proxy.egress.proxy.stats().activeRequests).toBe(0);
  });

  it('mid-answer: the origin sees its request closed, and the record says the answer was cut short', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://127.0.0.1:${port}/trickle/1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    expect(await s.read('first chunk')).toMatch(/^HTTP\/1\.1 200 /);
    const { closed } = await originHas('/trickle/1');
    s.socket.destroy();
    expect(await within(closed)).toBe(true);
    const rec = await proxy.sink.waitFor((r) => r.path === '/trickle/1');
    expect(rec).toMatchObject({ verdict: 'allow', status: 200, detail: { truncated: true } });
    expect(rec.bytesDown).toBeGreaterThan(0);
  });
});

describe('what the client never receives from the origin', () => {
  it.each(['/hop/named', '/hop/plain'])('%s: headers the origin names in Connection are dropped, the rest kept', async (path) => {
    const s = await openRaw(proxy.port);
    s.socket.write(`GET http://127.0.0.1:${port}${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    const head = (await s.read('\r\n\r\n')).toLowerCase();
    s.socket.destroy();
    expect(head).toMatch(/^http\/1\.1 200 /);
    expect(head).toContain('x-kept: yes');
    if (path === '/hop/named') expect(head).not.toContain('x-resp-hop');
    else expect(head).toContain('x-resp-hop: drop-me');
  });
});

describe('flow and counting', () => {
  it('a client that stops reading holds the origin back; once it reads again, every byte arrives and is counted', async () => {
    const size = 96 * 1024 * 1024;
    const s = await openRaw(proxy.port);
    s.socket.pause();
    s.socket.write(`GET http://127.0.0.1:${port}/big/${size} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 500));
    // Paused client: the proxy stops reading upstream, so the origin is held at what the socket buffers
    // and the proxy's own high-water marks take (a few MiB), far from the whole answer.
    expect(originSent.get(`/big/${size}`)).toBeGreaterThan(0);
    expect(originSent.get(`/big/${size}`)).toBeLessThan(size / 2);
    expect(proxy.sink.records.find((r) => r.path === `/big/${size}`)).toBeUndefined();
    let got = 0;
    const done = new Promise<void>((resolve) => {
      s.socket.removeAllListeners('data');
      s.socket.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= size) resolve();
      });
    });
    s.socket.resume();
    await done;
    s.socket.destroy();
    const rec = await proxy.sink.waitFor((r) => r.path === `/big/${size}`);
    expect(rec).toMatchObject({ status: 200, bytesDown: size });
    expect(rec.detail?.truncated).toBeUndefined();
  });

  it('a request body is forwarded and counted as bytesUp', async () => {
    const s = await openRaw(proxy.port);
    s.socket.write(`POST http://127.0.0.1:${port}/upload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: 5000\r\n\r\n`);
    s.socket.write(Buffer.alloc(5000, 120));
    expect(await s.read('got 5000')).toMatch(/^HTTP\/1\.1 200 /);
    s.socket.destroy();
    const rec = await proxy.sink.waitFor((r) => r.path === '/upload');
    expect(rec).toMatchObject({ method: 'POST', status: 200, bytesUp: 5000, bytesDown: 8 });
  });
});
