import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import type { FilteringResolver } from './resolver.js';
import type { Endpoint } from './endpoint.js';
import { canonicalPeer } from '../net/ip.js';

export interface ServerLimits {
  /** Concurrent TCP connections; more are closed at once. */
  maxTcpConnections: number;
  /** Concurrent TCP connections from one client address; more are closed at once. */
  maxTcpPerClient: number;
  /**
   * Deadline for a complete query: counted from the connection's start and from each complete query or
   * answer, never from single bytes, so a client dripping a byte at a time cannot hold a connection.
   */
  tcpIdleMs: number;
  /** Queries being worked on at once (both transports); beyond this, UDP queries are dropped. */
  maxInFlight: number;
}

export interface BoundServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Queries queued on one TCP connection before it is considered abusive and closed. */
const MAX_TCP_PIPELINE = 32;
const BIND_ATTEMPTS = 8;

/**
 * UDP and TCP on the same address and port. With port 0 the UDP port is chosen first and TCP must
 * get the same one; if another process holds it on TCP, we retry with a new port a bounded number
 * of times.
 */
export async function bindServers(ep: Endpoint, resolver: FilteringResolver, limits: ServerLimits, logger?: Logger): Promise<BoundServer> {
  let lastErr: unknown;
  for (let i = 0; i < (ep.port === 0 ? BIND_ATTEMPTS : 1); i++) {
    const udp = await bindUdp(ep);
    const port = udp.address().port;
    try {
      const tcp = await bindTcp(ep.host, port);
      return wire(udp, tcp, ep.host, port, resolver, limits, logger);
    } catch (e) {
      lastErr = e;
      await new Promise<void>((r) => udp.close(() => r()));
    }
  }
  throw lastErr;
}

function bindUdp(ep: Endpoint): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: ep.family === 6 ? 'udp6' : 'udp4' });
    s.once('error', reject);
    s.bind(ep.port, ep.host, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

function bindTcp(host: string, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host, port, exclusive: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

function wire(
  udp: dgram.Socket,
  tcp: net.Server,
  host: string,
  port: number,
  resolver: FilteringResolver,
  limits: ServerLimits,
  logger?: Logger,
): BoundServer {
  let inFlight = 0;
  let closing = false;
  const sockets = new Set<net.Socket>();

  udp.on('error', (err) => logger?.error({ err }, 'dns: UDP socket error'));
  udp.on('message', (msg, rinfo) => {
    if (closing || inFlight >= limits.maxInFlight) return;
    inFlight++;
    resolver
      .handle(msg, { address: rinfo.address, port: rinfo.port, transport: 'udp' })
      .then((out) => {
        if (out && !closing) udp.send(out, rinfo.port, rinfo.address, () => {});
      })
      .catch(() => {})
      .finally(() => inFlight--);
  });

  tcp.maxConnections = limits.maxTcpConnections;
  tcp.on('error', (err) => logger?.error({ err }, 'dns: TCP server error'));
  const perClient = new Map<string, number>();
  tcp.on('connection', (sock) => {
    if (closing) return void sock.destroy();
    sock.on('error', () => {}); // resets from clients are normal; 'close' cleans up
    // One client must not take every slot: without this, 128 slow connections from one address lock
    // every other client out of TCP.
    const peer = canonicalPeer(sock.remoteAddress ?? '');
    const held = perClient.get(peer) ?? 0;
    if (held >= limits.maxTcpPerClient) return void sock.destroy();
    perClient.set(peer, held + 1);
    sockets.add(sock);
    sock.on('close', () => {
      sockets.delete(sock);
      const n = (perClient.get(peer) ?? 1) - 1;
      if (n > 0) perClient.set(peer, n);
      else perClient.delete(peer);
    });
    let deadline: NodeJS.Timeout | null = null;
    const rearm = (): void => {
      if (deadline) clearTimeout(deadline);
      deadline = setTimeout(() => sock.destroy(), limits.tcpIdleMs);
      deadline.unref();
    };
    sock.on('close', () => {
      if (deadline) clearTimeout(deadline);
    });
    rearm();
    serveTcp(sock, resolver, () => {
      if (inFlight >= limits.maxInFlight) return false;
      inFlight++;
      return true;
    }, () => inFlight--, rearm);
  });

  return {
    address: host,
    port,
    close: async () => {
      closing = true;
      for (const s of sockets) s.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
}

/** RFC 1035 4.2.2 framing: each message is preceded by its 2-byte length. Answered in order. */
function serveTcp(sock: net.Socket, resolver: FilteringResolver, acquire: () => boolean, release: () => void, progress: () => void): void {
  let buf = Buffer.alloc(0);
  const queue: Buffer[] = [];
  let busy = false;
  const client = { address: sock.remoteAddress ?? '', port: sock.remotePort ?? 0, transport: 'tcp' as const };

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      while (queue.length > 0 && !sock.destroyed) {
        const msg = queue.shift()!;
        if (!acquire()) {
          sock.destroy();
          return;
        }
        let out: Buffer | null;
        try {
          out = await resolver.handle(msg, client);
        } finally {
          release();
        }
        if (out && !sock.destroyed) {
          const len = Buffer.alloc(2);
          len.writeUInt16BE(out.length);
          sock.write(Buffer.concat([len, out]));
          progress();
        }
      }
    } finally {
      busy = false;
    }
  };

  sock.on('data', (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    // Bounded by the framing: at most one partial 64 KiB message is ever buffered beyond the queue.
    while (buf.length >= 2) {
      const len = buf.readUInt16BE(0);
      if (buf.length < len + 2) break;
      queue.push(buf.subarray(2, len + 2));
      buf = buf.subarray(len + 2);
      progress();
    }
    if (queue.length > MAX_TCP_PIPELINE) return void sock.destroy();
    void pump();
  });
}
