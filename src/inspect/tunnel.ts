import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Pool } from 'undici';
import { isUpstreamTimeout } from '../proxy/upstream-errors.js';
import { roundMs, startRecord, type DecisionRecord } from '../decisions/record.js';
import { type Reason } from '../policy/vocabulary.js';
import type { Target } from '../net/target.js';
import { normalizeHost } from '../net/host.js';
import { emit, type ProxyCore } from '../proxy/core.js';
import { DialError } from '../proxy/dial.js';
import { forwardRequestHeaders } from '../proxy/headers.js';
import { settle } from '../proxy/record.js';
import { RecordedExchange } from '../proxy/exchange.js';
import { brokerRequest, normalizeRequestPath } from '../proxy/request-check.js';
import { refuseResponse, refuseSocket, type Refusal } from '../proxy/respond.js';
import { completeUpgrade } from '../proxy/forward.js';
import { trackTunnel, type TunnelReplies } from '../proxy/tunnel.js';
import { sendUpgrade, upgradeTokens, UpgradeTimeoutError, type UpgradeAnswer } from '../proxy/upgrade.js';
import type { VetContext, VetOutcome } from '../proxy/vet.js';
import type { LeafMinter } from './mint.js';
import { connectUpstreamTls, UpstreamTlsError } from './upstream.js';
import { UpstreamPools, type UpstreamKey } from './pool.js';

/** What inspection needs beyond the proxy core: the leaf minter and the roots origins must chain to. */
export interface Inspector {
  minter: LeafMinter;
  upstreamCa: string[];
}

/** One inspected tunnel: decided once at CONNECT, its requests each decided again. */
interface Tunnel {
  core: ProxyCore;
  ctx: VetContext;
  agent: string | null;
  target: Target;
  v: VetOutcome & { ok: true };
  parent: DecisionRecord;
  client: string;
  address: string;
  /** The pool of verified connections to this tunnel's origin (shared with this agent's other tunnels to it). */
  upstream: Pool;
  /** Roots the origin must chain to, for the extra TLS connection an inner Upgrade opens. */
  ca: string[];
}

const TUNNELS = new WeakMap<Socket, Tunnel>();
const POOLS = new WeakMap<Inspector, UpstreamPools>();

/** The inspector's upstream pools; undici is loaded with the first inspected or plain-HTTP request, not at start. */
async function poolsFor(inspector: Inspector, core: ProxyCore): Promise<UpstreamPools> {
  let p = POOLS.get(inspector);
  if (p === undefined) {
    const { Pool: PoolClass } = await import('undici');
    p = POOLS.get(inspector) ?? new UpstreamPools(PoolClass, inspector.upstreamCa, core.limits);
    POOLS.set(inspector, p);
  }
  return p;
}

function hostHeader(t: Target): string {
  const h = t.host.kind === 'ip' && t.host.family === 6 ? `[${t.host.value}]` : t.host.value;
  return t.port === 443 ? h : `${h}:${t.port}`;
}

/**
 * The HTTP server that parses requests inside inspected tunnels: the same strict parser and limits as
 * the proxy listener, HTTP/1.1 only. Sockets reach it decrypted, with their tunnel attached.
 */
export function createInnerServer(core: ProxyCore): Server {
  const server = createServer({
    maxHeaderSize: core.limits.maxHeaderBytes,
    headersTimeout: core.limits.headersTimeoutMs,
    requestTimeout: 0,
    keepAliveTimeout: 5_000,
    requireHostHeader: true,
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const t = TUNNELS.get(req.socket);
    if (!t) {
      res.destroy();
      return;
    }
    innerRequest(t, req, res).catch(() => res.destroy());
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const t = TUNNELS.get(socket);
    if (!t) return socket.destroy();
    innerUpgrade(t, req, socket, head).catch(() => socket.destroy());
  });
  server.on('clientError', (_err, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  return server;
}

/**
 * CONNECT to a destination whose deciding rule says `inspect: true`. The origin is dialled (vetted
 * address, SNI = the name, certificate verified) before the client hears 200, as for a raw tunnel;
 * then the client's TLS is terminated with a minted leaf and each request inside is decided on its own.
 */
export async function handleInspected(
  core: ProxyCore,
  inspector: Inspector,
  inner: Server,
  rec: DecisionRecord,
  t0: number,
  socket: Socket,
  head: Buffer,
  ctx: VetContext,
  agent: string | null,
  target: Target,
  v: VetOutcome & { ok: true },
  json: boolean,
  replies?: TunnelReplies,
): Promise<void> {
  const name = target.host.value;
  const isIp = target.host.kind === 'ip';
  const authority = `${name}:${target.port}`;
  rec.inspected = true;
  const tc = performance.now();
  const key: UpstreamKey = { agent, address: v.addresses[0], port: target.port, name, isIp };
  // A verified idle connection to the first vetted address (this agent's, same name) stands for the dial
  // before the 200; otherwise the origin is dialled and verified now. SOCKS5 replies name the upstream
  // socket's local end, so they always dial.
  let first: { socket: TLSSocket; address: string } | null = null;
  let pool: Pool | null = null;
  let secureContext;
  let pools: UpstreamPools;
  try {
    pools = await poolsFor(inspector, core);
    pool = replies ? null : pools.warm(key);
    if (pool !== null) {
      secureContext = await inspector.minter.contextFor(name, isIp);
    } else {
      [first, secureContext] = await Promise.all([
        connectUpstreamTls(v.addresses, target.port, name, isIp, inspector.upstreamCa, core.limits.connectTimeoutMs),
        inspector.minter.contextFor(name, isIp),
      ]);
    }
  } catch (err) {
    const { status, reason } = upstreamFailure(err);
    rec.timings.connectMs = roundMs(performance.now() - tc);
    rec.address = v.addresses[0];
    settle(rec, { verdict: v.verdict, mode: v.mode, reason, rule: v.rule, status });
    rec.detail = { ...rec.detail, error: (err as Error).message };
    const r = { status, reason, rule: v.rule, decisionId: rec.id, target: authority };
    if (replies) replies.refuse(r);
    else refuseSocket(socket, r, json);
    return emit(core, rec, t0);
  }
  const address = first?.address ?? key.address;
  rec.address = address;
  rec.timings.connectMs = roundMs(performance.now() - tc);
  if (socket.destroyed) {
    first?.socket.destroy();
    settle(rec, { verdict: v.verdict, mode: v.mode, reason: v.reason, rule: v.rule, status: null });
    return emit(core, rec, t0);
  }
  settle(rec, { verdict: v.verdict, mode: v.mode, reason: v.reason, rule: v.rule, status: 200 });
  // Every upstream connection of this tunnel goes to its vetted address with the same verification; the
  // one opened (and verified) before the 200, if any, is used first.
  const upstream = pools.take({ ...key, address }, first?.socket ?? null);

  if (replies && first) replies.established(first.socket);
  else socket.write(`HTTP/1.1 200 Connection established\r\nX-Agent-Egress-Decision: ${rec.id}\r\n\r\n`);
  if (head.length > 0) socket.unshift(head);
  const tls = new TLSSocket(socket, {
    isServer: true,
    secureContext,
    ALPNProtocols: ['http/1.1'],
    // The proxy's own upstream TLS always names the tunnel's host, so another SNI fronts nothing here; it
    // is still a client asking for another server than it was allowed, refused as on raw tunnels, and
    // during the handshake, so no request is ever decrypted.
    SNICallback: (servername, cb) => {
      const why = sniMismatch(servername, target);
      if (why === null) return cb(null, secureContext);
      settle(rec, { verdict: 'deny', mode: v.mode, reason: 'sni_mismatch', rule: null, status: 200 });
      rec.detail = { ...rec.detail, sni: why.sni, error: why.message, tunnelRule: v.rule };
      if (v.mode === 'report') cb(null, secureContext);
      else cb(new Error(why.message));
    },
  });
  const tunnel: Tunnel = { core, ctx, agent, target, v, parent: rec, client: rec.client, address, upstream, ca: inspector.upstreamCa };
  TUNNELS.set(tls, tunnel);

  const finish = trackTunnel(core, rec, t0, () => {
    tls.destroy();
    socket.destroy();
    return { up: socket.bytesRead, down: socket.bytesWritten };
  });
  tls.on('error', (err: NodeJS.ErrnoException) => {
    // A client that does not trust the inspection CA fails here: say so in the tunnel's record.
    if (!rec.detail?.clientTlsError) rec.detail = { ...rec.detail, clientTlsError: err.code ?? err.message.slice(0, 120) };
    finish();
  });
  tls.on('close', finish);
  socket.on('close', finish);
  socket.setTimeout(core.limits.tunnelIdleMs, finish);
  inner.emit('connection', tls);
}

/** The SNI the client sent, when it names a host other than the tunnel's (IP-literal tunnels: not judged here). */
function sniMismatch(sni: string, target: Target): { sni: string; message: string } | null {
  if (sni === '' || target.host.kind !== 'name') return null;
  let host;
  try {
    host = normalizeHost(sni);
  } catch {
    host = null;
  }
  if (host && host.kind === 'name' && host.value === target.host.value) return null;
  return { sni: sni.slice(0, 255), message: `TLS names ${sni.slice(0, 255)}: the tunnel was authorised for ${target.host.value}` };
}

function upstreamFailure(err: unknown): { status: number; reason: Reason } {
  if (err instanceof UpstreamTlsError) return { status: 502, reason: 'upstream_tls' };
  if (err instanceof DialError && err.timeout) return { status: 504, reason: 'upstream_timeout' };
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof UpstreamTlsError) return { status: 502, reason: 'upstream_tls' };
  if (isUpstreamTimeout(err)) return { status: 504, reason: 'upstream_timeout' };
  return { status: 502, reason: 'upstream_error' };
}

/** Decide one request inside the tunnel; returns the child record and the headers to send, or refuses. */
function admitInner(t: Tunnel, req: IncomingMessage, rec: DecisionRecord, refuse: (status: number, reason: Reason, message?: string) => void): { path: string; query: string; headers: string[] } | null {
  const raw = req.url ?? '';
  const q = raw.indexOf('?');
  const rawPath = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q);
  if (!rawPath.startsWith('/')) {
    refuse(400, 'bad_request', 'inside an inspected tunnel, requests must be origin-form (GET /path)');
    return null;
  }
  const np = normalizeRequestPath(rawPath, query);
  if (!np.ok) {
    rec.path = rawPath.slice(0, 2048);
    refuse(400, 'bad_request', np.message);
    return null;
  }
  rec.path = t.core.recordOpts.logQuery ? np.path + query : np.path;
  const expected = hostHeader(t.target);
  const sent = req.headers.host;
  if (sent !== undefined && sent.toLowerCase() !== expected) {
    // The tunnel's name decides, as with absolute-form requests: a different Host never picks another site.
    rec.detail = { ...rec.detail, hostHeaderMismatch: String(sent).slice(0, 255) };
  }
  const { ctx, target, agent } = t;
  const d = ctx.policy.decide({ agent, host: target.host, port: target.port, method: req.method ?? 'GET', http: { path: np.path, query, headers: req.headers } });
  const report = d.verdict === 'deny' && d.mode === 'report';
  if (d.verdict === 'deny' && !report) {
    settle(rec, { verdict: 'deny', mode: d.mode, reason: d.reason, rule: d.rule, status: 403 });
    refuse(403, d.reason);
    return null;
  }
  // The tunnel's address was vetted for the CONNECT; this request's own rules may constrain it further.
  if (d.constraint && ctx.policy.vetAddresses(d.constraint, [t.address]).allowed.length === 0) {
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'address_not_allowed', rule: d.rule, status: 403 });
    refuse(403, 'address_not_allowed');
    return null;
  }
  const v: VetOutcome & { ok: true } = { ...t.v, decision: d, verdict: d.verdict, mode: d.mode, reason: d.reason, rule: d.rule, ok: true };
  const b = brokerRequest(ctx, v, forwardRequestHeaders(req.rawHeaders, expected), np.path + query);
  if (!b.ok) {
    settle(rec, { verdict: 'deny', mode: d.mode, reason: 'secret_not_allowed', rule: d.rule, status: 403 });
    rec.detail = { ...rec.detail, secret: b.secret };
    refuse(403, 'secret_not_allowed');
    return null;
  }
  if (b.secrets.length > 0) rec.secrets = b.secrets;
  settle(rec, { verdict: b.report ? 'deny' : d.verdict, mode: d.mode, reason: b.report ? 'secret_not_allowed' : d.reason, rule: d.rule, status: null });
  return { path: np.path, query, headers: b.headers };
}

function childRecord(t: Tunnel, req: IncomingMessage): DecisionRecord {
  const rec = startRecord(t.client, req.method ?? '', t.target.host.value, t.target.port, t.ctx.policy.hash);
  rec.agent = t.agent;
  rec.parent = t.parent.id;
  rec.address = t.address;
  return rec;
}

async function innerRequest(t: Tunnel, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = performance.now();
  const { core } = t;
  const rec = childRecord(t, req);
  const label = `${req.method} ${hostHeader(t.target)}`;
  const json = (req.headers.accept ?? '').includes('application/json');
  const refuse = (status: number, reason: Reason, message?: string) => {
    if (status === 400) settle(rec, { verdict: 'deny', mode: 'enforce', reason, rule: null, status });
    if (message) rec.detail = { ...rec.detail, error: message };
    refuseResponse(res, { status, reason, rule: rec.rule, message, decisionId: rec.id, target: label }, json, status === 400);
    req.resume();
    emit(core, rec, t0);
  };
  const a = admitInner(t, req, rec, refuse);
  if (!a) return;
  core.counters.activeRequests++;
  const x = new InnerExchange(t, rec, t0, label, json, req, res);
  t.upstream.dispatch({ path: a.path + a.query, method: req.method ?? 'GET', headers: a.headers, body: x.body() }, x);
}

/** One request inside an inspected tunnel, sent on the tunnel's pool (proxy/exchange.ts). */
class InnerExchange extends RecordedExchange {
  /** The decision the request was admitted with: the origin's status or a failure is settled onto it. */
  private readonly verdict: Pick<DecisionRecord, 'verdict' | 'mode' | 'reason' | 'rule'>;

  constructor(t: Tunnel, rec: DecisionRecord, t0: number, label: string, json: boolean, req: IncomingMessage, res: ServerResponse) {
    super(t.core, rec, t0, label, json, req, res);
    this.verdict = { verdict: rec.verdict, mode: rec.mode, reason: rec.reason, rule: rec.rule };
  }

  protected settleStatus(status: number, reason?: Reason): void {
    settle(this.rec, { ...this.verdict, ...(reason ? { reason } : {}), status });
  }

  protected failure(err: unknown): { status: number; reason: Reason } {
    return upstreamFailure(err);
  }

  protected errorText(err: unknown): string {
    return String((err as Error).message).slice(0, 200);
  }

  protected refusalExtra(): Partial<Refusal> {
    return { rule: this.rec.rule };
  }
}

/**
 * An Upgrade (WebSocket) inside an inspected tunnel: decided by the same rules as its requests, then sent
 * over a new TLS connection to the tunnel's vetted address (verified like the first). Only a real 101
 * whose Upgrade matches what was asked is spliced; any other answer is relayed and the connection
 * closed, since the inner parser has given the socket up.
 */
async function innerUpgrade(t: Tunnel, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const t0 = performance.now();
  const rec = childRecord(t, req);
  const label = `${req.method} ${hostHeader(t.target)}`;
  const refuse = (status: number, reason: Reason, message?: string) => {
    if (status === 400) settle(rec, { verdict: 'deny', mode: 'enforce', reason, rule: null, status });
    if (message) rec.detail = { ...rec.detail, error: message };
    refuseSocket(socket, { status, reason, rule: rec.rule, message, decisionId: rec.id, target: label });
    emit(t.core, rec, t0);
  };
  const a = admitInner(t, req, rec, refuse);
  if (!a) return;
  const verdict = { verdict: rec.verdict, mode: rec.mode, reason: rec.reason, rule: rec.rule };
  const fail = (status: number, reason: Reason, message: string) => {
    settle(rec, { ...verdict, reason, status });
    rec.detail = { ...rec.detail, error: message.slice(0, 200) };
    refuseSocket(socket, { status, reason, rule: rec.rule, message, decisionId: rec.id, target: label });
    emit(t.core, rec, t0);
  };
  const asked = upgradeTokens(req.headers.upgrade);
  const { core, target } = t;
  const tc = performance.now();
  let up: TLSSocket;
  try {
    up = (await connectUpstreamTls([t.address], target.port, target.host.value, target.host.kind === 'ip', t.ca, core.limits.connectTimeoutMs)).socket;
  } catch (err) {
    const { status, reason } = upstreamFailure(err);
    return fail(status, reason, (err as Error).message);
  }
  rec.timings.connectMs = roundMs(performance.now() - tc);
  const gone = () => up.destroy();
  socket.once('close', gone);
  let answer: UpgradeAnswer;
  try {
    answer = await sendUpgrade(up, { method: req.method ?? 'GET', path: a.path + a.query, headers: [...a.headers, 'Connection', 'Upgrade', 'Upgrade', asked.join(', ')], asked, timeoutMs: core.limits.requestIdleMs });
  } catch (err) {
    socket.off('close', gone);
    up.destroy();
    if (err instanceof UpgradeTimeoutError) return fail(504, 'upstream_timeout', err.message);
    return fail(502, 'upstream_error', (err as Error).message);
  }
  socket.off('close', gone);
  await completeUpgrade(core, rec, t0, socket, { method: req.method ?? 'GET', asked, head }, answer, fail, () => socket.end());
}
