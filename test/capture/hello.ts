import { spawn } from 'node:child_process';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { sniff } from '../../src/capture/sniff.js';

/**
 * A real ClientHello, as a real client sends it: a local listener reads the first bytes of a TLS
 * connection from node:tls or `openssl s_client` until they hold a complete hello, then hangs up.
 */
export async function captureClientHello(client: 'node' | 'openssl', servername: string | null): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const got = new Promise<Buffer>((resolve, reject) => {
    server.once('connection', (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (sniff(buf, { maxHeaderBytes: 16384 }).kind !== 'more') {
          s.destroy();
          resolve(buf);
        }
      });
      s.on('error', () => undefined);
      setTimeout(() => reject(new Error('no ClientHello within 10 s')), 10_000).unref();
    });
  });
  if (client === 'node') {
    const t = tlsConnect({ host: '127.0.0.1', port, servername: servername ?? undefined, rejectUnauthorized: false });
    t.on('error', () => undefined);
  } else {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, ...(servername === null ? ['-noservername'] : ['-servername', servername])];
    const p = spawn('openssl', args, { stdio: ['pipe', 'ignore', 'ignore'] });
    p.on('error', () => undefined);
    got.finally(() => p.kill()).catch(() => undefined);
  }
  try {
    return await got;
  } finally {
    server.close();
  }
}

/** The handshake message of a single-record hello, re-framed into records of the given fragment sizes (the rest in one last record). */
export function reframe(hello: Buffer, sizes: number[]): Buffer {
  const msg = handshakeOf(hello);
  const out: Buffer[] = [];
  let off = 0;
  for (const n of sizes) {
    if (off >= msg.length) break;
    out.push(record(msg.subarray(off, off + n)));
    off += n;
  }
  if (off < msg.length) out.push(record(msg.subarray(off)));
  return Buffer.concat(out);
}

export function record(frag: Buffer, type = 0x16): Buffer {
  const h = Buffer.from([type, 0x03, 0x01, 0, 0]);
  h.writeUInt16BE(frag.length, 3);
  return Buffer.concat([h, frag]);
}

/** The handshake bytes of a hello in one or more records. */
export function handshakeOf(hello: Buffer): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  while (off + 5 <= hello.length && hello[off] === 0x16) {
    const len = hello.readUInt16BE(off + 3);
    parts.push(hello.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  const all = Buffer.concat(parts);
  return all.subarray(0, 4 + all.readUIntBE(1, 3));
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const vec16 = (b: Buffer) => Buffer.concat([u16(b.length), b]);

/** An SNI extension body from raw (name_type, name) entries. */
export function sniExtension(entries: [number, Buffer][]): Buffer {
  const list = Buffer.concat(entries.map(([t, n]) => Buffer.concat([Buffer.from([t]), vec16(n)])));
  return Buffer.concat([u16(0), vec16(vec16(list))]);
}

/** A synthetic ClientHello (one record) with the given raw extensions; `extensions: null` omits the block. */
export function syntheticHello(extensions: Buffer[] | null, opts: { sessionId?: Buffer; suites?: Buffer; compression?: Buffer; trailing?: Buffer } = {}): Buffer {
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]),
    Buffer.alloc(32, 7),
    Buffer.concat([Buffer.from([(opts.sessionId ?? Buffer.alloc(0)).length]), opts.sessionId ?? Buffer.alloc(0)]),
    vec16(opts.suites ?? Buffer.from([0x13, 0x01, 0x00, 0xff])),
    Buffer.concat([Buffer.from([(opts.compression ?? Buffer.from([0])).length]), opts.compression ?? Buffer.from([0])]),
    extensions === null ? Buffer.alloc(0) : vec16(Buffer.concat(extensions)),
    opts.trailing ?? Buffer.alloc(0),
  ]);
  const head = Buffer.from([0x01, 0, 0, 0]);
  head.writeUIntBE(body.length, 1, 3);
  return record(Buffer.concat([head, body]));
}

/**
 * A transport for tls.connect over `sock` that sends the first write (the ClientHello) re-framed into TLS
 * records of `recordSizes` and cut into TCP segments of `segment` bytes, 15 ms apart; later writes go as is.
 */
export function slowHelloDuplex(sock: Socket, recordSizes: number[], segment: number): Duplex {
  let first = true;
  const d = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (!first) return sock.write(chunk, () => cb());
      first = false;
      const framed = reframe(chunk, recordSizes);
      if (framed.length <= chunk.length) return cb(new Error('the hello was not re-framed'));
      void (async () => {
        for (let i = 0; i < framed.length; i += segment) {
          sock.write(framed.subarray(i, i + segment));
          await new Promise((r) => setTimeout(r, 15));
        }
        cb();
      })();
    },
  });
  sock.on('data', (c) => d.push(c));
  sock.on('end', () => d.push(null));
  sock.on('error', () => undefined);
  return d;
}
