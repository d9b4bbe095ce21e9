import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { roundMs, startRecord, type DecisionRecord } from '../decisions/record.js';
import type { DecisionSink } from '../decisions/sink.js';
import { formatHostPort } from '../net/endpoint.js';
import { clientAddress, clientLabel, emit, rawCore, type ProxyCore } from '../proxy/core.js';
import { ConnectionCount } from '../proxy/admission.js';
import { SOCKET_HIGH_WATER_MARK, type ProxyLimits } from '../proxy/options.js';
import { settle, settleVet } from '../proxy/record.js';
import type { Refusal } from '../proxy/respond.js';
import { dialForTunnel, splice } from '../proxy/tunnel.js';
import { vetDestination, type VetContext } from '../proxy/vet.js';
import { answerInTunnel } from './gate.js';
import { nameFromContent } from './judge.js';
import type { TransparentMapping } from './mapping.js';
import { peek } from './peek.js';

/** One captured port and the listener that stands for it. */
export interface TransparentBinding {
  capturedPort: number;
  address: string;
  port: number;
}

export interface TransparentOptions {
  context: () => VetContext;
  sink: DecisionSink;
  logger: Logger;
  limits?: Partial<ProxyLimits>;
  mappings: TransparentMapping[];
}

/**
 * The listeners for connections the companion firewall redirected (`serve --transparent-listen`). The
 * agent never addressed the proxy, so the destination is read from the first bytes (SNI or Host), judged
 * on the port the listener stands for, resolved by the proxy and dialled at a vetted address (never the
 * address the agent chose); the agent is identified by its source address. From the dial on, a
 * connection is an opaque tunnel like a CONNECT: dialForTunnel, the content check, splice.
 */
export class TransparentListener {
  private readonly core: ProxyCore;
  private readonly servers: Server[] = [];
  private readonly connections = new ConnectionCount();
  private isDraining = false;
  readonly bindings: TransparentBinding[] = [];

  constructor(private readonly opts: TransparentOptions) {
    // Nothing here is ever handed to an HTTP parser, and nothing is inspected.
    this.core = rawCore(opts, () => this.isDraining);
  }

  /** Bind every mapping; on any failure the ones already bound are closed and the error is thrown. */
  async listen(): Promise<TransparentBinding[]> {
    try {
      for (const m of this.opts.mappings) {
        const server = createServer({ noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK }, (s) => this.admit(s, m.capturedPort));
        this.servers.push(server);
        const a = await new Promise<{ address: string; port: number }>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: m.host, port: m.port }, () => {
            server.off('error', reject);
            const addr = server.address();
            if (addr && typeof addr === 'object') resolve({ address: addr.address, port: addr.port });
            else reject(new Error('no address'));
          });
        });
        this.bindings.push({ capturedPort: m.capturedPort, ...a });
      }
    } catch (err) {
      await this.close(0);
      const e = err as NodeJS.ErrnoException;
      throw new Error(`transparent listener: ${e.code ?? e.message}`, { cause: err });
    }
    return this.bindings;
  }

  stats(): { activeConnections: number; activeTunnels: number } {
    return { activeConnections: this.connections.sockets.size, activeTunnels: this.core.counters.activeTunnels };
  }

  /** The same connection limits as the proxy listener, counted over this listener's sockets. */
  private admit(socket: Socket, capturedPort: number): void {
    const over = this.connections.add(socket, this.core.limits);
    socket.on('error', () => socket.destroy());
    const t0 = performance.now();
    const rec = startRecord(clientLabel(socket), 'TRANSPARENT', '', capturedPort, this.core.context().policy.hash);
    rec.capture = 'transparent';
    if (over || this.isDraining) {
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: over ? 'limit_exceeded' : 'shutting_down', rule: null, status: null });
      if (over) rec.detail = { limit: over };
      socket.destroy();
      return emit(this.core, rec, t0);
    }
    this.handle(socket, capturedPort, rec, t0).catch((err) => {
      // A handler bug costs this one connection, never the process.
      this.core.logger.error({ err }, 'transparent connection failed');
      socket.destroy();
    });
  }

  private async handle(socket: Socket, port: number, rec: DecisionRecord, t0: number): Promise<void> {
    const core = this.core;
    const ctx = core.context();
    const timeoutMs = core.limits.headersTimeoutMs;
    const { buf, seen } = await peek(socket, { timeoutMs, maxHeaderBytes: core.limits.maxHeaderBytes });
    const named = nameFromContent(seen, port, timeoutMs);
    const refuse = (protocol: 'tls' | 'http' | 'other', r: Omit<Refusal, 'decisionId'>) => {
      if (!socket.destroyed) answerInTunnel(socket, protocol, { ...r, decisionId: rec.id });
      emit(core, rec, t0);
    };
    if (!named.ok) {
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: named.reason, rule: null, status: named.protocol === 'http' ? 400 : null });
      rec.detail = { ...named.detail, error: named.message };
      return refuse(named.protocol, { status: 400, reason: named.reason, message: named.message });
    }
    const target = named.target;
    const authority = formatHostPort(target.host.value, port);
    rec.host = target.host.value;
    rec.detail = { protocol: named.protocol };
    const status = (s: number) => (named.protocol === 'http' ? s : null);

    // No Proxy-Authorization can reach a listener the agent does not know it talks to: the source address is all.
    const who = ctx.policy.identify({ authPresent: false, sourceAddress: clientAddress(socket) });
    if (!who.ok) {
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'auth_required', rule: null, status: status(403) });
      rec.detail = { ...rec.detail, error: 'the policy requires credentials, which a transparently captured connection cannot carry' };
      return refuse(named.protocol, { status: 403, reason: 'auth_required', message: 'credentials are required, and a captured connection cannot send them', target: authority });
    }
    rec.agent = who.agent;

    const v = await vetDestination(ctx, who.agent, target, undefined, undefined, socket);
    rec.timings.dnsMs = roundMs(v.dnsMs);
    if (v.refused) rec.detail = { ...rec.detail, refusedAddresses: v.refused };
    if (!v.ok) {
      settleVet(rec, v, status(v.status));
      return refuse(named.protocol, { status: v.status, reason: v.reason, rule: rec.rule, message: v.message, hint: v.hint?.text, target: authority });
    }
    if (v.decision?.effects?.inspect) {
      // Inspection answers a CONNECT; a captured connection has none to answer. Fail closed rather than
      // pass an inspecting rule's traffic uninspected.
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'protocol_not_allowed', rule: v.rule, status: status(403) });
      const message = `rule ${v.rule} inspects ${target.host.value}: point the agent at the proxy (HTTPS_PROXY) for it`;
      rec.detail = { ...rec.detail, error: message };
      return refuse(named.protocol, { status: 403, reason: 'protocol_not_allowed', rule: v.rule, message, target: authority });
    }
    if (socket.destroyed) {
      settleVet(rec, v, null);
      return emit(core, rec, t0);
    }
    const upstream = await dialForTunnel(core, rec, t0, socket, v, port, {
      target: authority,
      json: false,
      status: null,
      answer: (r) => {
        rec.status = status(r.status);
        answerInTunnel(socket, named.protocol, r);
      },
    });
    if (!upstream) return;
    if (socket.destroyed) {
      upstream.destroy();
      return emit(core, rec, t0);
    }
    // The bytes read to learn the name go first, unchanged; the content check reads them again.
    socket.unshift(buf);
    splice(core, rec, t0, socket, upstream);
  }

  /** Stop accepting, let open tunnels run for up to graceMs, then cut them (each writes its record). */
  async close(graceMs = this.core.limits.shutdownGraceMs): Promise<void> {
    this.isDraining = true;
    const closed = Promise.all(this.servers.filter((s) => s.listening).map((s) => new Promise<void>((r) => s.close(() => r()))));
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && this.connections.sockets.size > 0) await new Promise((r) => setTimeout(r, 50));
    for (const finish of [...this.core.tunnels]) finish();
    for (const s of this.connections.sockets) s.destroy();
    await closed;
  }
}
