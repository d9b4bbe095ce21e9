import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { startRecord } from '../decisions/record.js';
import type { DecisionSink } from '../decisions/sink.js';
import { clientLabel, emit, type ProxyCore } from '../proxy/core.js';
import { ConnectionCount } from '../proxy/admission.js';
import { DEFAULT_LIMITS, SOCKET_HIGH_WATER_MARK, type ProxyLimits } from '../proxy/options.js';
import { settle } from '../proxy/record.js';
import type { VetContext } from '../proxy/vet.js';
import { serveSocks } from './socks5-session.js';
import { createInnerServer, type Inspector } from '../inspect/tunnel.js';

export interface SocksServerOptions {
  context: () => VetContext;
  sink: DecisionSink;
  logger: Logger;
  /** The same limits and timeouts as the HTTP listener (header timeout = handshake timeout). */
  limits?: Partial<ProxyLimits>;
  /** HTTPS inspection for rules with `inspect: true`, as on the HTTP listener. */
  inspector?: Inspector | null;
}

/**
 * The SOCKS5 listener (RFC 1928 CONNECT, RFC 1929 username/password): connection admission, the
 * handshake, then CONNECT's own vet, dial, splice and record; graceful shutdown like the HTTP listener.
 */
export class SocksServer {
  private readonly listener: Server;
  private readonly core: ProxyCore;
  private readonly connections = new ConnectionCount();
  private isDraining = false;

  constructor(opts: SocksServerOptions) {
    this.core = {
      context: opts.context,
      sink: opts.sink,
      limits: { ...DEFAULT_LIMITS, ...opts.limits },
      recordOpts: { logQuery: false },
      logger: opts.logger,
      counters: { activeTunnels: 0, activeRequests: 0 },
      draining: () => this.isDraining,
      tunnels: new Set(),
      // SOCKS5 connections are never handed to an HTTP parser.
      reattach: (socket) => socket.destroy(),
      inspect: null,
    };
    if (opts.inspector) this.core.inspect = { inspector: opts.inspector, server: createInnerServer(this.core) };
    this.listener = createServer({ noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK }, (s) => this.admit(s));
  }

  /** Per-client and total limits before a byte is read, as on the HTTP listener: over either, closed and recorded. */
  private admit(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const over = this.connections.add(socket, this.core.limits);
    if (this.isDraining || over) {
      const t0 = performance.now();
      const rec = startRecord(clientLabel(socket), 'SOCKS5', '', null, this.core.context().policy.hash);
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: over ? 'limit_exceeded' : 'shutting_down', rule: null, status: 503 });
      if (over) rec.detail = { limit: over };
      // Nothing was read, so there is nothing to answer in SOCKS terms: the connection is simply closed.
      socket.destroy();
      emit(this.core, rec, t0);
      return;
    }
    serveSocks(this.core, socket);
  }

  listen(host: string, port: number): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen({ host, port }, () => {
        this.listener.off('error', reject);
        const a = this.listener.address();
        if (a && typeof a === 'object') resolve({ address: a.address, port: a.port });
        else reject(new Error('no address'));
      });
    });
  }

  get listening(): boolean {
    return this.listener.listening;
  }

  stats(): { activeConnections: number; activeTunnels: number; activeRequests: number } {
    return { activeConnections: this.connections.sockets.size, activeTunnels: this.core.counters.activeTunnels, activeRequests: this.core.counters.activeRequests };
  }

  /**
   * Stop accepting; requests being vetted or dialled and open tunnels get up to graceMs, then what is
   * left is cut (each cut tunnel still writes its record). Handshakes not yet complete are cut at once
   * at the end; one that completes while draining is refused (shutting_down).
   */
  async close(graceMs = this.core.limits.shutdownGraceMs): Promise<void> {
    this.isDraining = true;
    const closed = new Promise<void>((r) => this.listener.close(() => r()));
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && (this.core.counters.activeRequests > 0 || this.core.tunnels.size > 0)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const finish of [...this.core.tunnels]) finish();
    for (const s of this.connections.sockets) s.destroy();
    await closed;
  }
}
