import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { SOCKET_HIGH_WATER_MARK } from './options.js';

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
export async function dialVetted(addresses: string[], port: number, timeoutMs: number): Promise<{ socket: Socket; address: string }> {
  let last: DialError | null = null;
  for (const address of addresses) {
    try {
      const socket = await dialOne(address, port, timeoutMs);
      return { socket, address };
    } catch (err) {
      last = err as DialError;
    }
  }
  throw last ?? new DialError(false, 'no address to connect to');
}

function dialOne(address: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // net.Socket hands these to stream.Duplex; @types/node's NetConnectOpts does not list them.
    const opts: NetConnectOpts & { readableHighWaterMark: number; writableHighWaterMark: number } = {
      host: address,
      port,
      noDelay: true,
      readableHighWaterMark: SOCKET_HIGH_WATER_MARK,
      writableHighWaterMark: SOCKET_HIGH_WATER_MARK,
    };
    const socket = connect(opts);
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
