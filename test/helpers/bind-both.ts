import dgram from 'node:dgram';
import type net from 'node:net';

/** A fresh UDP socket bound to 127.0.0.1 on an ephemeral port. */
export function bindUdpEphemeral(): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const udp = dgram.createSocket('udp4');
    udp.once('error', reject);
    udp.bind(0, '127.0.0.1', () => {
      udp.off('error', reject);
      resolve(udp);
    });
  });
}

/**
 * UDP on an ephemeral port, then TCP on the same number. That number was free for UDP only: on a busy
 * machine another process may hold it on TCP (EADDRINUSE), so give the UDP one back and try a fresh pair.
 * `bindUdp` returns a bound socket (tests inject a taken port).
 */
export async function bindBoth(
  tcp: net.Server,
  bindUdp: () => Promise<dgram.Socket> = bindUdpEphemeral,
  attempts = 20,
): Promise<{ udp: dgram.Socket; port: number }> {
  let last: unknown = null;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const udp = await bindUdp();
    const port = udp.address().port;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { udp, port };
    } catch (err) {
      last = err;
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    }
  }
  throw new Error(`could not bind UDP and TCP to the same port: ${String(last)}`);
}
