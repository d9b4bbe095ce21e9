import type { Socket } from 'node:net';
import { clientAddress } from './core.js';

/**
 * The open connections of a listener, in total and per client address, for the connection limits that
 * are checked when a socket arrives, before a byte of it is read. Every listener keeps one.
 */
export class ConnectionCounter {
  readonly sockets = new Set<Socket>();
  private readonly perClient = new Map<string, number>();

  /** Count the socket until it closes; say which limit it is over, if any. */
  admit(socket: Socket, limits: { maxConnections: number; maxConnectionsPerClient: number }): 'per_client' | 'total' | null {
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
    return this.sockets.size > limits.maxConnections ? 'total' : null;
  }
}
