import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, Socket, type Server as NetServer } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Agent } from 'undici';
import type { DecisionSink } from '../decisions/sink.js';
import { handleConnect } from './connect.js';
import { ConnectHeadParser } from './connect-head.js';
import { createInnerServer, type Inspector } from '../inspect/tunnel.js';
import { clientLabel, destroySelf, emit, type ProxyCore } from './core.js';
import { ConnectionCount } from './admission.js';
import { handleRequest, handleUpgrade } from './forward.js';
import { DEFAULT_LIMITS, SOCKET_HIGH_WATER_MARK, type ProxyLimits, type RecordOptions } from './options.js';
import { refuseSocket } from './respond.js';
import { startRecord } from '../decisions/record.js';
import { checkRequestLine } from './conformance.js';
import { settle } from './record.js';
import type { VetContext } from './vet.js';

const PLAIN_TO_TLS = 'this proxy listener speaks TLS: use an https:// proxy URL (e.g. HTTPS_PROXY=https://host:port)';

export interface TlsListenerOptions {
  cert: string | Buffer;
  key: string | Buffer;
  /** CA bundle for client certificates; when set, clients must present one it signed. */
  clientCa?: string | Buffer;
}

export interface ProxyServerOptions {
  context: () => VetContext;
  sink: DecisionSink;
  logger: Logger;
  limits?: Partial<ProxyLimits>;
  record?: Partial<RecordOptions>;
  tls?: TlsListenerOptions;
  /** HTTPS inspection for rules with `inspect: true`; without it such CONNECTs are refused. */
  inspector?: Inspector | null;
}

export interface ProxyStats {
  activeConnections: number;
  activeTunnels: number;
  activeRequests: number;
}

/** What a plain connection's head reader keeps on the socket until the head is handed on. */
interface HeadState {
  owner: ProxyServer;
  buf: Buffer;
  /** Set once the first bytes say CONNECT. */
  parser: ConnectHeadParser | null;
  timer: NodeJS.Timeout;
}
const HEAD = Symbol('agent-egress.head');
type Reading = Socket & { [HEAD]?: HeadState };
const EMPTY = Buffer.alloc(0);
const CONNECT_SP = Buffer.from('CONNECT ', 'latin1');

function onHeadData(this: Reading, chunk: Buffer): void {
  const st = this[HEAD];
  if (st) st.owner.headBytes(this, st, chunk);
}

function onHeadTimeout(socket: Reading): void {
  const st = socket[HEAD];
  if (!st) return;
  stopReading.call(socket);
  socket.pause();
  st.owner.headTimeout(socket);
}

/** The head was handed on, refused, or the socket closed: the reader lets go of the socket. */
function stopReading(this: Reading): void {
  const st = this[HEAD];
  if (!st) return;
  clearTimeout(st.timer);
  this[HEAD] = undefined;
  this.off('data', onHeadData);
  this.off('close', stopReading);
}

/** One proxy listener: connection admission, the CONNECT / request / upgrade handlers, and graceful shutdown. */
export class ProxyServer {
  readonly server: Server;
  /** The listening socket: admission happens here, before the HTTP server parses a byte. */
  private readonly listener: NetServer;
  private readonly core: ProxyCore;
  /** undici's pool for plain HTTP, built with the first such request (a CONNECT-only proxy never loads undici). */
  private agent: Promise<Agent> | null = null;
  private readonly connections = new ConnectionCount();
  private isDraining = false;
  private readonly tls: boolean;

  constructor(opts: ProxyServerOptions) {
    const limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.tls = !!opts.tls;
    this.core = {
      context: opts.context,
      sink: opts.sink,
      limits,
      recordOpts: { logQuery: false, ...opts.record },
      logger: opts.logger,
      counters: { activeTunnels: 0, activeRequests: 0 },
      draining: () => this.isDraining,
      tunnels: new Set(),
      reattach: (socket, head) => this.reattach(socket, head),
      inspect: null,
    };
    if (opts.inspector) this.core.inspect = { inspector: opts.inspector, server: createInnerServer(this.core) };
    const httpOpts = {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      // No whole-request deadline: large uploads are legitimate; idle timeouts bound them instead.
      requestTimeout: 0,
      keepAliveTimeout: limits.keepAliveMs,
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
      insecureHTTPParser: false,
      requireHostHeader: false,
      highWaterMark: SOCKET_HIGH_WATER_MARK,
    };
    this.server = opts.tls
      ? createHttpsServer({
          ...httpOpts,
          cert: opts.tls.cert,
          key: opts.tls.key,
          ca: opts.tls.clientCa,
          requestCert: !!opts.tls.clientCa,
          rejectUnauthorized: !!opts.tls.clientCa,
          minVersion: 'TLSv1.2',
        })
      : createHttpServer(httpOpts);
    // Sockets are created here, not by the HTTP server, so the buffer size (S2 bulk throughput) is set here too.
    this.listener = createNetServer({ noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK }, (s) => this.admitConnection(s));
    this.server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      handleConnect(this.core, req, socket, head).catch((err) => this.crashGuard(err, socket));
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      handleUpgrade(this.core, req, socket, head).catch((err) => this.crashGuard(err, socket));
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.upstreamAgent()
        .then((agent) => handleRequest(this.core, agent, req, res))
        .catch((err) => this.crashGuard(err, req.socket));
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, tls: TLSSocket) => this.onTlsClientError(err, tls));
  }

  private upstreamAgent(): Promise<Agent> {
    // Upstream connections for plain HTTP are pooled per vetted address:port (the origin key is the IP).
    this.agent ??= import('undici').then(
      ({ Agent }) => new Agent({ connect: { timeout: this.core.limits.connectTimeoutMs }, keepAliveTimeout: 4_000, connections: 256, pipelining: 1 }),
    );
    return this.agent;
  }

  /**
   * Per-client and total connection limits, checked before a byte is parsed: a refused connection
   * gets its 503 and is closed without ever reaching the HTTP parser, so nothing it sent is acted on.
   */
  private admitConnection(socket: Socket): void {
    const over = this.connections.add(socket, this.core.limits);
    if (over) {
      const t0 = performance.now();
      const rec = startRecord(clientLabel(socket), 'CONNECTION', '', null, this.core.context().policy.hash);
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'limit_exceeded', rule: null, status: 503 });
      rec.detail = { limit: over };
      socket.on('error', destroySelf);
      refuseSocket(socket, { status: 503, reason: 'limit_exceeded', decisionId: rec.id });
      emit(this.core, rec, t0);
      return;
    }
    if (this.tls) this.server.emit('connection', socket);
    else this.readHead(socket);
  }

  /**
   * The first bytes of a plain connection, read here before any HTTP parser sees them. A CONNECT is
   * parsed here in full (connect-head.ts) and goes straight to handleConnect: a tunnel never costs an
   * llhttp parser, an IncomingMessage or the HTTP server's per-connection listeners. Anything else is
   * handed to the HTTP server once its request line checked out byte-exactly: llhttp accepts several
   * spaces between its parts, which RFC 9112 §3 does not. (On a TLS listener the bytes are encrypted
   * here; the version and header checks in conformance.ts still apply to every request.) The handlers
   * are shared functions that find their state on the socket: nothing is allocated per connection but
   * that state and one timer (the head deadline).
   */
  private readHead(socket: Socket): void {
    const s = socket as Reading;
    s[HEAD] = { owner: this, buf: EMPTY, parser: null, timer: setTimeout(onHeadTimeout, this.core.limits.headersTimeoutMs, s) };
    socket.on('data', onHeadData);
    socket.on('close', stopReading);
    socket.on('error', destroySelf);
  }

  /** More bytes of a head. Called by onHeadData only (public for that module function, not an API). */
  headBytes(socket: Reading, st: HeadState, chunk: Buffer): void {
    const buf = (st.buf = st.buf.length === 0 ? chunk : Buffer.concat([st.buf, chunk]));
    const max = this.core.limits.maxHeaderBytes;
    if (!st.parser) {
      let start = 0;
      while (start < buf.length && (buf[start] === 13 || buf[start] === 10)) start++;
      if (buf.length - start >= CONNECT_SP.length && buf.compare(CONNECT_SP, 0, CONNECT_SP.length, start, start + CONNECT_SP.length) === 0) {
        st.parser = new ConnectHeadParser(max);
      } else {
        const nl = buf.indexOf(10, start);
        if (nl === -1 && buf.length <= max) return;
        stopReading.call(socket);
        socket.pause();
        const bad = nl === -1 ? null : checkRequestLine(buf.toString('latin1', 0, nl + 1));
        if (bad) return this.refuseUnparsed(socket, bad.status, bad.message, 'request_line');
        // Hand over as if nothing had been read: Node resumes the socket when its parser attaches.
        socket.unshift(buf);
        (socket as { readableFlowing: boolean | null }).readableFlowing = null;
        this.server.emit('connection', socket);
        return;
      }
    }
    const r = st.parser.feed(buf);
    if (r === null) return;
    stopReading.call(socket);
    // Not flowing and not paused, as node:http leaves a socket it emits 'connect' with: whoever reads next resumes it.
    socket.pause();
    (socket as { readableFlowing: boolean | null }).readableFlowing = null;
    if ('error' in r) return this.refuseUnparsed(socket, r.error.status, r.error.message, r.error.code);
    const head = r.end === buf.length ? EMPTY : buf.subarray(r.end);
    handleConnect(this.core, r.head, socket, head).catch((err) => this.crashGuard(err, socket));
  }

  /** The head deadline passed. Called by onHeadTimeout only. */
  headTimeout(socket: Socket): void {
    this.refuseUnparsed(socket, 408, `request head not received within ${this.core.limits.headersTimeoutMs} ms`, 'ERR_HTTP_REQUEST_TIMEOUT');
  }

  private reattach(socket: Socket, head: Buffer): void {
    if (socket.destroyed) return;
    if (this.isDraining) {
      socket.end();
      return;
    }
    if (head.length > 0) socket.unshift(head);
    // A fresh parser for the same socket: Node freed the old one when it emitted 'upgrade'. On the TLS
    // listener the socket is already the decrypted TLSSocket, which https.Server takes on 'secureConnection'.
    this.server.emit(this.tls ? 'secureConnection' : 'connection', socket);
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    let status = 400;
    let message = 'malformed HTTP request';
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      message = `request head larger than ${this.core.limits.maxHeaderBytes} bytes`;
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      message = `request head not received within ${this.core.limits.headersTimeoutMs} ms`;
    }
    this.refuseUnparsed(socket, status, message, err.code ?? 'parse_error');
  }

  /** A request the proxy could not (or would not) parse: recorded as bad_request and answered on the socket. */
  private refuseUnparsed(socket: Socket, status: number, message: string, error: string): void {
    const t0 = performance.now();
    const rec = startRecord(clientLabel(socket), 'UNPARSED', '', null, null);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status });
    rec.detail = { error };
    refuseSocket(socket, { status, reason: 'bad_request', message, decisionId: rec.id });
    emit(this.core, rec, t0);
  }

  /**
   * A failed TLS handshake (wrong or missing client certificate) never reaches HTTP: the TLS alert is the
   * answer. A client that spoke plain HTTP to the TLS listener can read an HTTP answer, so it gets a 400
   * saying how to reach the proxy, on the raw socket under the TLS one.
   */
  private onTlsClientError(err: NodeJS.ErrnoException, tls: TLSSocket): void {
    if (err.code !== 'ERR_SSL_HTTP_REQUEST') return;
    // node:tls keeps the wrapped socket as _parent; it is not in the public types.
    const raw = (tls as TLSSocket & { _parent?: unknown })._parent;
    if (!(raw instanceof Socket) || !raw.writable) return;
    raw.on('error', () => raw.destroy());
    const t0 = performance.now();
    const rec = startRecord(clientLabel(raw), 'UNPARSED', '', null, null);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: 400 });
    rec.detail = { error: 'plain HTTP to the TLS listener' };
    refuseSocket(raw, { status: 400, reason: 'bad_request', message: PLAIN_TO_TLS, decisionId: rec.id });
    emit(this.core, rec, t0);
  }

  /** A handler bug must cost one connection, never the process. */
  private crashGuard(err: unknown, socket: Socket): void {
    this.core.logger.error({ err }, 'request handler failed');
    socket.destroy();
  }

  listen(host: string, port: number): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen({ host, port }, () => {
        this.listener.off('error', reject);
        // The HTTP server never listens itself (sockets are handed to it after admission), but its
        // request-head deadline (headersTimeout, slowloris) runs on a timer it starts on 'listening'.
        this.server.emit('listening');
        const a = this.listener.address();
        if (a && typeof a === 'object') resolve({ address: a.address, port: a.port });
        else reject(new Error('no address'));
      });
    });
  }

  get listening(): boolean {
    return this.listener.listening;
  }

  stats(): ProxyStats {
    return { activeConnections: this.connections.sockets.size, activeTunnels: this.core.counters.activeTunnels, activeRequests: this.core.counters.activeRequests };
  }

  /**
   * Stop accepting, let in-flight requests and tunnels finish for up to graceMs, then cut what is left
   * (each cut tunnel still writes its record). Records are flushed by the caller closing the sink.
   */
  async close(graceMs = this.core.limits.shutdownGraceMs): Promise<void> {
    this.isDraining = true;
    const closed = new Promise<void>((r) => this.listener.close(() => r()));
    // Stops the HTTP server's connection-checking timer; it reports "not running", which is expected.
    this.server.close(() => undefined);
    this.server.closeIdleConnections();
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && (this.core.counters.activeRequests > 0 || this.core.tunnels.size > 0)) {
      await new Promise((r) => setTimeout(r, 50));
      this.server.closeIdleConnections();
    }
    for (const finish of [...this.core.tunnels]) finish();
    for (const s of this.connections.sockets) s.destroy();
    this.server.closeAllConnections();
    await closed;
    // Anything still in flight upstream has outlived the grace period: cut it rather than wait.
    await this.agent?.then((a) => a.destroy()).catch(() => undefined);
  }
}
