import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { SOCKET_HIGH_WATER_MARK } from './options.js';
import { markRelayRead, relayReadOptions } from './pair.js';

export class DialError extends Error {
  constructor(
    readonly timeout: boolean,
    message: string,
    /** The errno code (ECONNREFUSED, ETIMEDOUT, …), for the refusal's Proxy-Status. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * Connect to the first vetted address that answers, in the order resolution returned them. Only
 * addresses passed in are ever tried: there is no lookup here, so nothing can swap the destination.
 */
export async function dialVetted(addresses: string[], port: number, timeoutMs: number, opts: DialOptions = {}): Promise<{ socket: Socket; address: string }> {
  let last: DialError | null = null;
  for (const address of addresses) {
    try {
      const socket = await dialOne(address, port, timeoutMs, opts.relay === true);
      return { socket, address };
    } catch (err) {
      last = err as DialError;
    }
  }
  throw last ?? new DialError(false, 'no address to connect to');
}

export interface DialOptions {
  /**
   * The socket will only ever be relayed by pairSockets (an opaque tunnel's upstream): read it through
   * pair.ts's buffers, without 'data' events. Not for a socket anything else reads (TLS, an Upgrade's 101).
   */
  relay?: boolean;
}

function dialOne(address: string, port: number, timeoutMs: number, relay: boolean): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // net.Socket hands these to stream.Duplex; @types/node's NetConnectOpts does not list them.
    const opts: NetConnectOpts & { readableHighWaterMark: number; writableHighWaterMark: number } = {
      host: address,
      port,
      noDelay: true,
      readableHighWaterMark: SOCKET_HIGH_WATER_MARK,
      writableHighWaterMark: SOCKET_HIGH_WATER_MARK,
      // An address is given, never a name: net.connect skips the lookup for an IP literal.
      ...(relay ? relayReadOptions() : {}),
    };
    const socket = connect(opts);
    if (relay) markRelayRead(socket);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DialError(true, `connect to ${address} timed out`, 'ETIMEDOUT'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new DialError(err.code === 'ETIMEDOUT', `connect to ${address}: ${err.code ?? err.message}`, err.code));
    });
  });
}
