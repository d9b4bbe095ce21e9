import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

/**
 * The bytes a CONNECT tunnel relays, checked end to end with real sockets: both directions at once, in
 * bulk, through several tunnels at a time, with readers slow enough to fill the proxy's write buffers
 * (the upstream side reads into buffers the relay reuses: a reused buffer must never reach a client
 * before its bytes were sent), and with a server that talks first.
 */

const DOWN = 6 * 1024 * 1024;
const UP = 3 * 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Origin {
  server: Server;
  port: number;
  /** sha256 of what each connection received after the client's request head, by connection order. */
  received: Promise<string>[];
}

/**
 * A raw origin: after the client's HTTP head it sends `payload`, reads `upBytes` more from the client
 * (hashing them), then closes. With `banner`, it speaks first, on connect.
 */
async function startOrigin(payload: Buffer, upBytes: number, opts: { banner?: Buffer; endAfterBanner?: boolean } = {}): Promise<Origin> {
  const received: Promise<string>[] = [];
  const server = createServer((s) => {
    s.on('error', () => s.destroy());
    if (opts.banner) {
      if (opts.endAfterBanner) return void s.end(opts.banner);
      s.write(opts.banner);
    }
    received.push(
      new Promise((resolve) => {
        let buf = Buffer.alloc(0);
        let head = false;
        const up = createHash('sha256');
        let left = upBytes;
        const take = (c: Buffer) => {
          const part = c.subarray(0, left);
          up.update(part);
          left -= part.length;
          if (left === 0) {
            resolve(up.digest('hex'));
            s.end();
          }
        };
        s.on('data', (c: Buffer) => {
          if (head) return take(c);
          buf = Buffer.concat([buf, c]);
          const i = buf.indexOf('\r\n\r\n');
          if (i < 0) return;
          head = true;
          s.write(payload);
          take(buf.subarray(i + 4));
        });
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, received };
}

/** CONNECT, then the HTTP head the content check reads; resolves once the proxy said 200. */
function openTunnel(proxyPort: number, port: number): Promise<{ socket: Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = connect(proxyPort, '127.0.0.1');
    let buf = Buffer.alloc(0);
    socket.once('error', reject);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      socket.off('data', onData);
      socket.pause();
      if (!buf.subarray(0, 12).equals(Buffer.from('HTTP/1.1 200'))) return reject(new Error(buf.toString('latin1', 0, 60)));
      resolve({ socket, rest: buf.subarray(i + 4) });
    };
    socket.on('data', onData);
    socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  });
}

/** Read until the far end closes, pausing now and then so the proxy's buffers towards us fill up. */
function readAllSlowly(socket: Socket, first: Buffer, stallEvery: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [first];
    let n = 0;
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (++n % stallEvery === 0) {
        socket.pause();
        setTimeout(() => socket.resume(), 5);
      }
    });
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.resume();
  });
}

/** Upload `body` after the head, in pieces (the client does not half-close: the proxy ends both ways on a client FIN). */
async function upload(socket: Socket, port: number, body: Buffer): Promise<void> {
  socket.write(`POST /up HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  for (let off = 0; off < body.length; off += 256 * 1024) {
    if (!socket.write(body.subarray(off, off + 256 * 1024))) await new Promise((r) => socket.once('drain', r));
  }
}

let proxy: TestProxy;
const payload = randomBytes(DOWN);
let bulk: Origin;

beforeAll(async () => {
  bulk = await startOrigin(payload, UP);
  proxy = await startTestProxy({ flags: { allow: ['127.0.0.1/32:1024-65535'], deny: [], allowAddress: ['127.0.0.1/32'] } });
});

afterAll(async () => {
  await proxy?.close();
  bulk?.server.close();
});

describe('tunnel relay', () => {
  it('relays bulk bytes both ways unchanged through several tunnels at once, with slow readers, and records the byte counts', async () => {
    const tunnels = 5;
    const uploads = Array.from({ length: tunnels }, () => randomBytes(UP));
    const before = bulk.received.length;
    const results = await Promise.all(
      uploads.map(async (body, k) => {
        const { socket, rest } = await openTunnel(proxy.port, bulk.port);
        const [down] = await Promise.all([readAllSlowly(socket, rest, 3 + k), upload(socket, bulk.port, body)]);
        socket.destroy();
        return down;
      }),
    );
    for (const down of results) {
      expect(down.length).toBe(DOWN);
      expect(sha(down)).toBe(sha(payload));
    }
    const got = await Promise.all(bulk.received.slice(before));
    expect(got).toHaveLength(tunnels);
    expect(got.sort()).toEqual(uploads.map(sha).sort());
    const headLen = Buffer.byteLength(`POST /up HTTP/1.1\r\nHost: 127.0.0.1:${bulk.port}\r\n\r\n`);
    const relayed = (r: { method: string; bytesDown: number | null; bytesUp: number | null }) => r.method === 'CONNECT' && r.bytesDown === DOWN && r.bytesUp === UP + headLen;
    await proxy.sink.waitFor(() => proxy.sink.records.filter(relayed).length >= tunnels);
    expect(proxy.sink.records.filter(relayed)).toHaveLength(tunnels);
  });

  it('a server that talks first: its bytes reach the client only after the check passed, and unchanged', async () => {
    const banner = randomBytes(40 * 1024);
    const o = await startOrigin(Buffer.from('after'), 0, { banner });
    try {
      const { socket, rest } = await openTunnel(proxy.port, o.port);
      // Nothing is relayed before the client's first bytes were checked.
      socket.resume();
      const early: Buffer[] = [rest];
      socket.on('data', (c: Buffer) => early.push(c));
      await new Promise((r) => setTimeout(r, 150));
      expect(Buffer.concat(early).length).toBe(0);
      socket.removeAllListeners('data');
      const all = readAllSlowly(socket, Buffer.alloc(0), 1000);
      socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${o.port}\r\n\r\n`);
      const got = await all;
      expect(got.equals(Buffer.concat([banner, Buffer.from('after')]))).toBe(true);
    } finally {
      o.server.close();
    }
  });

  it('a server that says something and closes before the client spoke: the client still gets it after the check', async () => {
    const banner = Buffer.from('421 busy, try later\r\n');
    const o = await startOrigin(Buffer.alloc(0), 0, { banner, endAfterBanner: true });
    try {
      const { socket, rest } = await openTunnel(proxy.port, o.port);
      await new Promise((r) => setTimeout(r, 100));
      const all = readAllSlowly(socket, rest, 1000);
      socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${o.port}\r\n\r\n`);
      expect((await all).toString()).toBe(banner.toString());
      socket.destroy();
    } finally {
      o.server.close();
    }
  });
});

describe('idle tunnels', () => {
  it('a relayed tunnel with no bytes either way is closed after --tunnel-idle-timeout; one that keeps talking stays open', async () => {
    const echo = createServer((s) => {
      s.on('error', () => s.destroy());
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const port = (echo.address() as { port: number }).port;
    const idleMs = 600;
    const p = await startTestProxy({ flags: { allow: [`127.0.0.1/32:${port}`], deny: [], allowAddress: ['127.0.0.1/32'] }, limits: { tunnelIdleMs: idleMs, headersTimeoutMs: 5_000 } });
    try {
      const head = `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
      const open = async () => {
        const t = await openTunnel(p.port, port);
        let echoed = t.rest.length;
        t.socket.on('data', (c: Buffer) => (echoed += c.length));
        t.socket.resume();
        t.socket.write(head);
        const closed = new Promise<void>((r) => t.socket.once('close', () => r()));
        return { ...t, closed, echoed: () => echoed };
      };
      const active = await open();
      const idle = await open();
      // The active tunnel sends a byte every idleMs / 6 for over three idle periods: it is never idle that long.
      let sent = 0;
      while (sent < 20) {
        active.socket.write('x');
        sent++;
        await new Promise((r) => setTimeout(r, idleMs / 6));
      }
      expect(active.socket.destroyed).toBe(false);
      for (let i = 0; i < 100 && active.echoed() < head.length + sent; i++) await new Promise((r) => setTimeout(r, 10));
      expect(active.echoed()).toBe(head.length + sent);
      // The idle one (checked, relayed once, then silent) was closed, and its record written with its bytes.
      await idle.closed;
      const rec = await p.sink.waitFor((r) => r.method === 'CONNECT' && r.port === port && r.bytesUp === head.length);
      expect(rec).toMatchObject({ verdict: 'allow', status: 200, bytesDown: head.length });
      // Once the active one stops talking, it is closed too.
      await active.closed;
      await p.sink.waitFor((r) => r.method === 'CONNECT' && r.port === port && r.bytesUp === head.length + sent);
    } finally {
      await p.close();
      echo.close();
    }
  });
});
