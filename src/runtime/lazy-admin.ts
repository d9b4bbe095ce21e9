import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { assertAdminAuthConfig } from '../admin/auth.js';
import type { AdminServer, AdminServerOptions } from '../admin/server.js';
import { isLoopbackHost } from '../net/endpoint.js';

/**
 * The admin API bound at start but built on its first connection: fastify, its schema compiler and
 * the routes cost ~10 MiB of RSS that a sidecar nobody queries never needs. The address, the token
 * checks and a bind failure are still settled at start, like an eager listener's. Connections that
 * arrive while it loads wait paused; if it cannot be built, they and every later one are closed.
 */
export async function startLazyAdmin(opts: AdminServerOptions & { logger: Logger }): Promise<AdminServer> {
  const { host, port } = assertAdminAuthConfig(opts.listen, opts.token, opts.open, isLoopbackHost, opts.viewerToken);
  const listener: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ host, port }, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const a = listener.address();
  if (!a || typeof a === 'string') throw new Error('admin API did not bind a TCP address');

  let app: Promise<AdminServer | null> | null = null;
  const waiting = new Set<Socket>();
  const build = async (): Promise<AdminServer | null> => {
    try {
      const { startAdminServer } = await import('../admin/server.js');
      return await startAdminServer({ ...opts, listener });
    } catch (err) {
      opts.logger.error({ err }, 'admin API failed to start; closing its connections');
      return null;
    }
  };
  const onError = function (this: Socket) {
    this.destroy();
  };
  const first = (socket: Socket) => {
    // Held, not read: what it sends stays buffered for the HTTP parser it is handed to.
    socket.pause();
    socket.on('error', onError);
    waiting.add(socket);
    socket.once('close', () => waiting.delete(socket));
    if (app) return;
    app = build().then((started) => {
      listener.off('connection', first);
      // The started server listens for 'connection' itself from now on; hand it the ones that waited.
      for (const s of waiting) {
        if (!started || s.destroyed) {
          s.destroy();
          continue;
        }
        s.off('error', onError);
        // As if never paused: node:http resumes the socket when its parser attaches.
        (s as { readableFlowing: boolean | null }).readableFlowing = null;
        for (const l of listener.listeners('connection')) (l as (c: Socket) => void)(s);
      }
      waiting.clear();
      if (!started) listener.on('connection', (s: Socket) => s.destroy());
      return started;
    });
  };
  listener.on('connection', first);
  return {
    address: a.address,
    port: a.port,
    async close() {
      const closed = new Promise<void>((r) => listener.close(() => r()));
      for (const s of waiting) s.destroy();
      await (await app)?.close();
      await closed;
    },
  };
}
