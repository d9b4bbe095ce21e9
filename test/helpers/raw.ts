import { connect, type Socket } from 'node:net';

/** Send raw bytes to the proxy and collect everything until it closes (or ms pass). */
export function rawExchange(port: number, data: string | Buffer, ms = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    }, ms);
    s.on('data', (c) => chunks.push(c));
    s.on('error', (e) => {
      clearTimeout(timer);
      if (chunks.length) resolve(Buffer.concat(chunks).toString('latin1'));
      else reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    s.write(data);
  });
}

/** Open a raw socket and read until `until` appears in what was received. */
export function openRaw(port: number): Promise<{ socket: Socket; read(until: string | RegExp, ms?: number): Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buf = '';
    socket.on('data', (c) => (buf += c.toString('latin1')));
    socket.once('error', reject);
    socket.once('connect', () =>
      resolve({
        socket,
        async read(until, ms = 3_000) {
          const end = Date.now() + ms;
          for (;;) {
            const idx = typeof until === 'string' ? buf.indexOf(until) : buf.search(until);
            if (idx !== -1) {
              const m = typeof until === 'string' ? until.length : (buf.match(until)?.[0].length ?? 0);
              const out = buf.slice(0, idx + m);
              buf = buf.slice(idx + m);
              return out;
            }
            if (Date.now() > end || socket.destroyed) throw new Error(`timed out waiting for ${String(until)}; have ${JSON.stringify(buf.slice(0, 300))}`);
            await new Promise((r) => setTimeout(r, 10));
          }
        },
      }),
    );
  });
}
