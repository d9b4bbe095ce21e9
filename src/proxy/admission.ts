import type { Socket } from 'node:net';
import { clientAddress } from './core.js';
import type { ProxyLimits } from './options.js';

/** The count a socket is in, kept on the socket so one shared 'close' handler serves every connection. */
const COUNT = Symbol('agent-egress.connection-count');
type Counted = Socket & { [COUNT]?: ConnectionCount };

function onCountedClose(this: Counted): void {
  this[COUNT]?.release(this);
}

/**
 * The open client connections of one listener, in total and per client address, for the
 * --max-connections and --max-connections-per-client limits. Every listener counts its own.
 */
export class ConnectionCount {
  readonly sockets = new Set<Socket>();
  private readonly perClient = new Map<string, number>();

  /** Count the socket until it closes; says which limit it goes over, if any (the socket is counted either way). */
  add(socket: Socket, limits: Pick<ProxyLimits, 'maxConnections' | 'maxConnectionsPerClient'>): 'per_client' | 'total' | null {
    const ip = clientAddress(socket);
    const n = (this.perClient.get(ip) ?? 0) + 1;
    this.perClient.set(ip, n);
    this.sockets.add(socket);
    (socket as Counted)[COUNT] = this;
    // 'close' comes once: on() spares the wrapper once() would allocate.
    socket.on('close', onCountedClose);
    if (n > limits.maxConnectionsPerClient) return 'per_client';
    if (this.sockets.size > limits.maxConnections) return 'total';
    return null;
  }

  /** The socket closed (clientAddress is cached on it, so this is the address it was counted under). */
  release(socket: Socket): void {
    if (!this.sockets.delete(socket)) return;
    const ip = clientAddress(socket);
    const left = (this.perClient.get(ip) ?? 1) - 1;
    if (left <= 0) this.perClient.delete(ip);
    else this.perClient.set(ip, left);
  }
}
