import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

/** A raw SOCKS5 client over a real socket: write bytes, read exactly n bytes, and see whether the proxy closed. */
export class RawSocks {
  private buf = Buffer.alloc(0);
  closed = false;
  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => (this.buf = Buffer.concat([this.buf, c])));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawSocks> {
    return new Promise((resolve, reject) => {
      const s = connect(port, host);
      s.once('error', reject);
      s.once('connect', () => resolve(new RawSocks(s)));
    });
  }

  write(b: Buffer | number[] | string): void {
    this.socket.write(typeof b === 'string' ? Buffer.from(b, 'latin1') : Buffer.from(b));
  }

  /** Exactly n bytes, or throws with what arrived. */
  async read(n: number, ms = 5_000): Promise<Buffer> {
    const end = Date.now() + ms;
    while (this.buf.length < n) {
      if (Date.now() > end || (this.closed && this.buf.length < n)) throw new Error(`wanted ${n} bytes, have ${this.buf.length}: ${this.buf.toString('hex')}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Everything still unread once the proxy closed the connection; throws if it stays open past ms. */
  async untilClosed(ms = 5_000): Promise<Buffer> {
    const end = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > end) throw new Error(`connection still open after ${ms} ms; unread: ${this.buf.toString('hex')}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.buf;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export const greeting = (...methods: number[]): Buffer => Buffer.from([5, methods.length, ...methods]);

export function userPass(user: string, pass: string): Buffer {
  const u = Buffer.from(user, 'utf8');
  const p = Buffer.from(pass, 'utf8');
  return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]);
}

function portBytes(port: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(port);
  return b;
}

export function requestDomain(name: string, port: number, cmd = 1): Buffer {
  const n = Buffer.from(name, 'utf8');
  return Buffer.concat([Buffer.from([5, cmd, 0, 3, n.length]), n, portBytes(port)]);
}

export function requestIpv4(ip: string, port: number, cmd = 1): Buffer {
  return Buffer.concat([Buffer.from([5, cmd, 0, 1, ...ip.split('.').map(Number)]), portBytes(port)]);
}

/** Only full (uncompressed) or "::1"-style addresses are needed by the tests. */
export function requestIpv6(groups: number[], port: number, cmd = 1): Buffer {
  const a = Buffer.alloc(16);
  groups.forEach((g, i) => a.writeUInt16BE(g, i * 2));
  return Buffer.concat([Buffer.from([5, cmd, 0, 4]), a, portBytes(port)]);
}

/** Greeting (no-auth) + CONNECT request; returns the reply code after reading the 10-byte (IPv4) or 22-byte reply head. */
export async function connectVia(port: number, request: Buffer, methods = [0]): Promise<{ c: RawSocks; code: number; reply: Buffer }> {
  const c = await RawSocks.open(port);
  c.write(greeting(...methods));
  const m = await c.read(2);
  if (m[1] !== 0) throw new Error(`method ${m[1]}`);
  c.write(request);
  const head = await c.read(4);
  const rest = await c.read(head[3] === 4 ? 18 : 6);
  return { c, code: head[1], reply: Buffer.concat([head, rest]) };
}

/**
 * A TCP listener that accepts nothing and whose backlog is full, so the next SYN to it is dropped and
 * a connect times out: a real upstream timeout on loopback. Held by a Python child until closed.
 */
export async function startBlackhole(): Promise<{ port: number; close(): void }> {
  const py = `
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
fill = socket.socket(); fill.connect(('127.0.0.1', port))
print(port, flush=True)
sys.stdin.read()
`;
  const child: ChildProcess = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (c) => reject(new Error(`blackhole exited ${c}`)));
  });
  return { port: Number(line), close: () => child.kill() };
}
