import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { roundMs, type DecisionRecord } from '../decisions/record.js';
import type { DecisionSink } from '../decisions/sink.js';
import { formatHostPort } from '../net/endpoint.js';
import { canonicalPeer } from '../net/ip.js';
import type { Identity } from '../policy/types.js';
import { parseProxyAuthorization, type ProxyCredentials } from './auth.js';
import { DEFAULT_LIMITS, type ProxyLimits, type RecordOptions } from './options.js';
import type { VetContext } from './vet.js';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { Inspector } from '../inspect/tunnel.js';

/** What the request handlers share: the current checks, where records go, limits, and live counters. */
export interface ProxyCore {
  context(): VetContext;
  sink: DecisionSink;
  limits: ProxyLimits;
  recordOpts: RecordOptions;
  logger: Logger;
  counters: { activeTunnels: number; activeRequests: number };
  /** True once shutdown started: new work is refused with 503. */
  draining(): boolean;
  /**
   * Give a client connection back to the HTTP server (after an upgrade the origin declined), with the
   * bytes already read past the last request, so whatever follows is parsed and decided again.
   */
  reattach(socket: Socket, head: Buffer): void;
  /** HTTPS inspection (src/inspect): the leaf minter, upstream trust and the inner HTTP parser; null = off. */
  inspect: { inspector: Inspector; server: Server } | null;
  /** Close hooks for open tunnels, so shutdown can end them after the grace period. */
  tunnels: Set<() => void>;
}

/**
 * The core of a listener whose connections never reach an HTTP parser (SOCKS5, transparent capture):
 * the same checks, sink and limits, its own counters, tunnels and draining flag, no inspection.
 */
export function rawCore(opts: { context: () => VetContext; sink: DecisionSink; logger: Logger; limits?: Partial<ProxyLimits> }, draining: () => boolean): ProxyCore {
  return {
    context: opts.context,
    sink: opts.sink,
    limits: { ...DEFAULT_LIMITS, ...opts.limits },
    recordOpts: { logQuery: false },
    logger: opts.logger,
    counters: { activeTunnels: 0, activeRequests: 0 },
    draining,
    tunnels: new Set(),
    reattach: (socket) => socket.destroy(),
    inspect: null,
  };
}

/** A socket's 'error' listener that closes it: one shared function, not a closure per connection. */
export function destroySelf(this: Socket): void {
  this.destroy();
}

export function emit(core: ProxyCore, rec: DecisionRecord, t0: number): void {
  rec.timings.totalMs = roundMs(performance.now() - t0);
  core.sink.write(rec);
}

/** Canonical client address: IPv4 clients on a dual-stack listener appear as ::ffff:a.b.c.d. */
const PEER = Symbol('agent-egress.peer');

/** Computed once per connection (admission, identity and every record of a keep-alive connection ask). */
export function clientAddress(socket: Socket): string {
  const s = socket as Socket & { [PEER]?: string };
  return (s[PEER] ??= canonicalPeer(socket.remoteAddress ?? ''));
}

export function clientLabel(socket: Socket): string {
  return formatHostPort(clientAddress(socket), socket.remotePort ?? 0);
}

/** Verified client-certificate names (CN and DNS/URI/email SANs) on a TLS listener; none otherwise. */
export function certNames(socket: Socket): string[] | undefined {
  const tls = socket as TLSSocket;
  if (typeof tls.getPeerCertificate !== 'function' || !tls.authorized) return undefined;
  const cert = tls.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return undefined;
  const names: string[] = [];
  const cn = cert.subject?.CN;
  if (typeof cn === 'string') names.push(cn);
  for (const part of (cert.subjectaltname ?? '').split(/,\s*/)) {
    const i = part.indexOf(':');
    if (i > 0) names.push(part.slice(i + 1));
  }
  return names;
}

export function identify(ctx: VetContext, headers: IncomingHttpHeaders, socket: Socket): Identity {
  return identifyWith(ctx, parseProxyAuthorization(headers['proxy-authorization']), socket);
}

/**
 * Identify from credentials however they arrived (Proxy-Authorization, SOCKS5 username/password), the
 * client certificate and the source address: one identification for every entry point.
 */
export function identifyWith(ctx: VetContext, cred: ProxyCredentials, socket: Socket): Identity {
  return ctx.policy.identify({
    authPresent: cred.present,
    username: cred.username,
    password: cred.password,
    sourceAddress: clientAddress(socket),
    certNames: certNames(socket),
  });
}
