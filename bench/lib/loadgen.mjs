// Closed-loop load generator on plain net/tls sockets: each client starts its next operation as soon as
// the previous one ends. Every operation has a deadline, and every loop ends at a fixed time.
import net from 'node:net';
import tls from 'node:tls';

const OP_TIMEOUT_MS = 10_000;
const HEAD_END = Buffer.from('\r\n\r\n');

/** Runs `clients` loops of `op(client)` for warmupMs + durationMs; counts only ops that end in the window. */
export async function closedLoop({ clients, warmupMs, durationMs, makeClient, op }) {
  const t0 = performance.now();
  const start = t0 + warmupMs;
  const end = start + durationMs;
  const lat = [];
  let ops = 0;
  let errors = 0;
  let bytes = 0;
  let retries = 0;
  const firstErrors = [];
  const loop = async (i) => {
    const c = makeClient ? makeClient(i) : null;
    try {
      while (performance.now() < end) {
        const a = performance.now();
        try {
          const r = await op(c);
          const b = performance.now();
          // Ops that end in the window count, as the proxy CPU read over the same window does: those that
          // straddle the start and those that straddle the end cancel out on average (counting only ops
          // that also started in the window lost up to `clients` ops, a bias when latencies are long).
          if (b >= start && b <= end) {
            ops++;
            bytes += r.bytes;
            retries += r.retries ?? 0;
            lat.push(b - a);
          }
        } catch (err) {
          errors++;
          if (firstErrors.length < 3) firstErrors.push(String(err?.message ?? err));
          // An error usually means a dead connection; back off a little so a refusing proxy is not a busy loop.
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    } finally {
      c?.close();
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => loop(i)));
  lat.sort((x, y) => x - y);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : NaN);
  return { ops, errors, bytes, retries, seconds: durationMs / 1000, p50ms: pct(0.5), p99ms: pct(0.99), firstErrors };
}

function withDeadline(sock, reject) {
  const t = setTimeout(() => {
    sock.destroy();
    reject(new Error('operation timed out'));
  }, OP_TIMEOUT_MS);
  return () => clearTimeout(t);
}

/**
 * S1: a new TCP connection, CONNECT through the proxy (when one is given), then `GET /small` with
 * Connection: close; the origin closes first and the client waits for its FIN. With tlsInside, a full
 * TLS handshake to the HTTPS origin happens inside the tunnel.
 */
export function s1Op({ proxy, originPort, tlsInside = false, tlsOptions = null }) {
  const connectReq = Buffer.from(`CONNECT 127.0.0.1:${originPort} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`);
  const getReq = Buffer.from(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\nConnection: close\r\n\r\n`);
  return () =>
    new Promise((resolve, reject) => {
      const raw = net.connect(proxy ? proxy.port : originPort, '127.0.0.1');
      const clear = withDeadline(raw, reject);
      const fail = (err) => {
        clear();
        raw.destroy();
        reject(err);
      };
      raw.on('error', fail);
      const exchange = (s) => {
        let got = 0;
        let first = null;
        s.on('data', (c) => {
          if (!first) first = c;
          got += c.length;
        });
        s.on('error', fail);
        s.on('end', () => {
          clear();
          s.destroy();
          raw.destroy();
          if (first && first.toString('latin1', 0, 12) === 'HTTP/1.1 200' && got > 100) resolve({ bytes: got });
          else reject(new Error(`bad response: ${first ? first.toString('latin1', 0, 40) : 'none'}`));
        });
        s.write(getReq);
      };
      const inner = () => {
        if (!tlsInside) return exchange(raw);
        // The tunnel goes to an IP literal: no SNI (RFC 6066), where node would otherwise send "localhost",
        // which the tunnel content check refuses unless the policy allows that name.
        // tlsOptions: an inspected tunnel's client verifies the minted leaf against the inspection CA.
        const t = tls.connect({ socket: raw, servername: '', rejectUnauthorized: false, minVersion: 'TLSv1.3', ...tlsOptions }, () => exchange(t));
        t.on('error', fail);
      };
      raw.on('connect', () => {
        if (!proxy) return inner();
        let head = Buffer.alloc(0);
        const onHead = (c) => {
          head = head.length ? Buffer.concat([head, c]) : c;
          const i = head.indexOf(HEAD_END);
          if (i < 0) return;
          raw.off('data', onHead);
          if (head.toString('latin1', 0, 12) !== 'HTTP/1.1 200') return fail(new Error(`CONNECT refused: ${head.toString('latin1', 0, 40)}`));
          inner();
        };
        raw.on('data', onHead);
        raw.write(connectReq);
      });
    });
}

/** Opens a CONNECT tunnel and resolves with the socket once the proxy answered 200. */
export function openTunnel(proxyPort, host, port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(proxyPort, '127.0.0.1');
    const clear = withDeadline(s, reject);
    let head = Buffer.alloc(0);
    s.once('error', (e) => {
      clear();
      reject(e);
    });
    const onData = (c) => {
      head = head.length ? Buffer.concat([head, c]) : c;
      const i = head.indexOf(HEAD_END);
      if (i < 0) return;
      s.off('data', onData);
      clear();
      if (head.toString('latin1', 0, 12) !== 'HTTP/1.1 200') {
        s.destroy();
        return reject(new Error(`CONNECT refused: ${head.toString('latin1', 0, 40)}`));
      }
      resolve(s);
    };
    s.on('data', onData);
    s.on('connect', () => s.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`));
  });
}

/**
 * A keep-alive HTTP/1.1 client on one socket, one request at a time; responses must carry Content-Length.
 * If the server closes an idle connection, the next request reconnects (counted as a retry).
 */
export class KeepAlive {
  constructor(connect) {
    this.connect = connect;
    this.sock = null;
    this.pending = null;
  }

  async request(req) {
    let retries = 0;
    if (!this.sock || this.sock.destroyed) {
      if (this.sock) retries++;
      this.sock = await this.connect();
      this.attach(this.sock);
    }
    return new Promise((resolve, reject) => {
      const clear = withDeadline(this.sock, reject);
      this.pending = {
        head: null,
        left: -1,
        bytes: 0,
        done: (err) => {
          clear();
          this.pending = null;
          if (err) reject(err);
          else resolve({ bytes: this.lastBytes, retries });
        },
      };
      this.sock.write(req);
    });
  }

  attach(s) {
    s.setNoDelay(true);
    s.on('data', (c) => {
      const p = this.pending;
      if (!p) return s.destroy(); // unsolicited bytes: the connection is unusable
      p.bytes += c.length;
      if (p.left < 0) {
        p.head = p.head ? Buffer.concat([p.head, c]) : c;
        const i = p.head.indexOf(HEAD_END);
        if (i < 0) return;
        const head = p.head.toString('latin1', 0, i);
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (!head.startsWith('HTTP/1.1 200') || !m) {
          s.destroy();
          return p.done(new Error(`bad response: ${head.slice(0, 60)}`));
        }
        p.left = Number(m[1]) - (p.head.length - i - 4);
        p.head = null;
      } else {
        p.left -= c.length;
      }
      if (p.left === 0) {
        this.lastBytes = p.bytes;
        p.done(null);
      } else if (p.left < 0) {
        s.destroy();
        p.done(new Error('response longer than its Content-Length'));
      }
    });
    const gone = () => {
      if (this.pending) this.pending.done(new Error('connection closed mid-response'));
    };
    s.on('close', gone);
    s.on('error', () => s.destroy());
  }

  close() {
    this.sock?.destroy();
  }
}
