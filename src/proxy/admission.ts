import type { Socket } from 'node:net';
import { clientAddress } from './core.js';
import type { ProxyLimits } from './options.js';

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
    socket.once('close', () => {
      this.sockets.delete(socket);
      const left = (this.perClient.get(ip) ?? 1) - 1;
      if (left <= 0) this.perClient.delete(ip);
      else this.perClient.set(ip, left);
    });
    if (n > limits.maxConnectionsPerClient) return 'per_client';
    if (this.sockets.size > limits.maxConnections) return 'total';
    return null;
  }
}
