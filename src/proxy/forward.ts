import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Agent, Dispatcher } from 'undici';
import { isConnectTimeout, isUpstreamTimeout } from './upstream-errors.js';
import { parseProxyUrl, TargetError, type Target } from '../net/target.js';
import type { DecisionRecord } from '../decisions/record.js';
import { clientLabel, emit, identify, type ProxyCore } from './core.js';
import { forwardRequestHeaders } from './headers.js';
import { refuseResponse, refuseSocket, wantsJson, type Refusal } from './respond.js';
import { roundMs, startRecord } from '../decisions/record.js';
import { checkHead } from './conformance.js';
import { settle, settleVet } from './record.js';
import { RecordedExchange } from './exchange.js';
import type { Reason } from '../policy/vocabulary.js';
import { dialForTunnel, splice } from './tunnel.js';
import { responseHead, sendUpgrade, upgradeTokens, UpgradeTimeoutError, type UpgradeAnswer } from './upgrade.js';
import { vetDestination, type VetOutcome } from './vet.js';
import { brokerRequest, normalizeRequestPath } from './request-check.js';

const ORIGIN_FORM =
  'this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port, e.g. set HTTP_PROXY/HTTPS_PROXY to this address';

/** Authority for the upstream Host header: the URL's host, with the port only when not the default. */
function hostHeader(t: Target): string {
  const h = t.host.kind === 'ip' && t.host.family === 6 ? `[${t.host.value}]` : t.host.value;
  return t.port === 80 ? h : `${h}:${t.port}`;
}

function originFor(address: string, port: number): string {
  return address.includes(':') ? `http://[${address}]:${port}` : `http://${address}:${port}`;
}

interface Admitted {
  target: Target;
  /** Normalised (net/path.ts): what was judged is what is forwarded. */
  path: string;
  query: string;
  v: VetOutcome & { ok: true };
  /** Request headers to send upstream: hop-by-hop stripped, secrets brokered, rule headers set. */
  headers: string[];
}

/**
 * The checks shared by plain requests and upgrades: parse the absolute-form target, identify, decide,
 * resolve, guard. Returns null after answering the client when the request is refused.
 */
async function admit(
  core: ProxyCore,
  req: IncomingMessage,
  rec: DecisionRecord,
  t0: number,
  refuse: (r: Parameters<typeof refuseResponse>[1]) => void,
): Promise<Admitted | null> {
  const ctx = core.context();
  rec.policyHash = ctx.policy.hash;
  const url = req.url ?? '';
  if (core.draining()) {
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'shutting_down', rule: null, status: 503 });
    refuse({ status: 503, reason: 'shutting_down', decisionId: rec.id });
    emit(core, rec, t0);
    return null;
  }
  const bad = checkHead(req);
  if (bad) {
    rec.host = '';
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: bad.status });
    rec.detail = { error: bad.message };
    refuse({ status: bad.status, reason: 'bad_request', message: bad.message, decisionId: rec.id });
    emit(core, rec, t0);
    return null;
  }
  if (url.startsWith('/') || url === '*') {
    rec.host = '';
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: 400 });
    rec.detail = { error: 'origin-form request' };
    refuse({ status: 400, reason: 'bad_request', message: ORIGIN_FORM, decisionId: rec.id });
    emit(core, rec, t0);
    return null;
  }
  let parsed;
  try {
    parsed = parseProxyUrl(url);
  } catch (err) {
    const message = err instanceof TargetError ? `bad request target: ${err.message}` : 'bad request target';
    rec.host = url.slice(0, 255);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: 400 });
    rec.detail = { error: message };
    refuse({ status: 400, reason: 'bad_request', message, decisionId: rec.id });
    emit(core, rec, t0);
    return null;
  }
  const { target } = parsed;
  rec.host = target.host.value;
  rec.port = target.port;
  const np = normalizeRequestPath(parsed.path, parsed.query);
  if (!np.ok) {
    rec.path = parsed.path.slice(0, 2048);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: 400 });
    rec.detail = { error: np.message };
    refuse({ status: 400, reason: 'bad_request', message: np.message, decisionId: rec.id });
    emit(core, rec, t0);
    return null;
  }
  const path = np.path;
  rec.path = core.recordOpts.logQuery ? path + parsed.query : path;
  const expected = hostHeader(target);
  const authority = `${req.method} ${expected}`;

  const who = identify(ctx, req.headers, req.socket);
  if (!who.ok) {
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'auth_required', rule: null, status: 407 });
    refuse({ status: 407, reason: 'auth_required', message: who.message, decisionId: rec.id, target: authority });
    emit(core, rec, t0);
    return null;
  }
  rec.agent = who.agent;

  const v = await vetDestination(ctx, who.agent, target, req.method, { path, query: parsed.query, headers: req.headers }, req.socket);
  rec.timings.dnsMs = roundMs(v.dnsMs);
  if (v.refused) rec.detail = { ...rec.detail, refusedAddresses: v.refused };
  if (!v.ok) {
    settleVet(rec, v, v.status);
    refuse({ status: v.status, reason: v.reason, rule: rec.rule, message: v.message, hint: v.hint?.text, decisionId: rec.id, target: authority });
    emit(core, rec, t0);
    return null;
  }
  const sent = req.headers.host;
  if (sent !== undefined && sent.toLowerCase() !== expected) {
    // RFC 9112 §3.2.2: the absolute-form authority wins; note the mismatch (it is how Host-based bypasses look).
    rec.detail = { ...rec.detail, hostHeaderMismatch: String(sent).slice(0, 255) };
  }
  const b = brokerRequest(ctx, v, forwardRequestHeaders(req.rawHeaders, expected), path + parsed.query);
  if (!b.ok) {
    settle(rec, { verdict: 'deny', mode: v.mode, reason: 'secret_not_allowed', rule: v.rule, status: 403 });
    rec.detail = { ...rec.detail, secret: b.secret };
    refuse({ status: 403, reason: 'secret_not_allowed', rule: v.rule, decisionId: rec.id, target: authority });
    emit(core, rec, t0);
    return null;
  }
  if (b.secrets.length > 0) rec.secrets = b.secrets;
  if (b.report) {
    // Report mode: recorded as the refusal it would be; forwarded as sent, placeholders untouched.
    v.verdict = 'deny';
    v.reason = 'secret_not_allowed';
  }
  return { target, path, query: parsed.query, v, headers: b.headers };
}

/** Absolute-form plain HTTP, forwarded with undici to the vetted address; redirects are passed back, never followed. */
export async function handleRequest(core: ProxyCore, agent: Agent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = performance.now();
  const rec = startRecord(clientLabel(req.socket), req.method ?? '', '', null, null);
  const json = wantsJson(req.headers.accept);
  const a = await admit(core, req, rec, t0, (r) => refuseResponse(res, r, json, r.status === 400 || r.status === 503 || r.status === 505));
  if (!a) {
    // A refused request's body is not wanted; drain it so keep-alive stays usable, or close when it is large.
    req.resume();
    return;
  }
  core.counters.activeRequests++;
  new PlainExchange(core, agent, rec, t0, a, json, req, res).start();
}

/**
 * One forwarded request. Sent to the first vetted address that accepts a connection: only connect-phase
 * failures move on to the next address, and by then undici has not read the body, so nothing is sent twice.
 */
class PlainExchange extends RecordedExchange {
  private readonly opts: Dispatcher.DispatchOptions & { origin: string };
  private index = 0;

  constructor(
    core: ProxyCore,
    private readonly agent: Agent,
    rec: DecisionRecord,
    t0: number,
    private readonly a: Admitted,
    json: boolean,
    req: IncomingMessage,
    res: ServerResponse,
  ) {
    super(core, rec, t0, `${req.method} ${hostHeader(a.target)}`, json, req, res);
    const limits = core.limits;
    this.opts = {
      origin: originFor(a.v.addresses[0], a.target.port),
      path: a.path + a.query,
      method: req.method ?? 'GET',
      headers: a.headers,
      body: this.body(),
      headersTimeout: limits.requestIdleMs,
      bodyTimeout: limits.requestIdleMs,
    };
    rec.address = a.v.addresses[0];
  }

  start(): void {
    this.agent.dispatch(this.opts, this);
  }

  protected override retry(err: Error): boolean {
    const addresses = this.a.v.addresses;
    const code = (err as { code?: string }).code;
    const connectFailed = isConnectTimeout(err) || code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH';
    if (!connectFailed || this.index === addresses.length - 1) return false;
    const next = addresses[++this.index];
    this.rec.address = next;
    this.opts.origin = originFor(next, this.a.target.port);
    this.start();
    return true;
  }

  protected settleStatus(status: number, reason?: Reason): void {
    settleVet(this.rec, this.a.v, status, reason);
  }

  protected failure(err: unknown): { status: number; reason: Reason } {
    return isUpstreamTimeout(err) ? { status: 504, reason: 'upstream_timeout' } : { status: 502, reason: 'upstream_error' };
  }

  protected errorText(err: unknown): string {
    return errorText(err);
  }

  protected refusalExtra(err: unknown): Partial<Refusal> {
    const cause = (err as { code?: unknown }).code;
    return { cause: typeof cause === 'string' ? cause : undefined };
  }
}

function errorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return (e.code ? `${e.code}: ` : '') + String(e.message ?? err).slice(0, 200);
}

/**
 * Upgrade (WebSocket) on the plain-HTTP path: checked like any request, then sent to the vetted address.
 * Only a real 101 whose Upgrade matches what was asked becomes a raw tunnel. Any other answer is relayed
 * as an ordinary response and the client connection goes back to the HTTP parser, so every request that
 * follows on it is parsed and decided on its own.
 */
export async function handleUpgrade(core: ProxyCore, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const t0 = performance.now();
  socket.on('error', () => socket.destroy());
  const rec = startRecord(clientLabel(socket), req.method ?? '', '', null, null);
  const json = wantsJson(req.headers.accept);
  const a = await admit(core, req, rec, t0, (r) => refuseSocket(socket, r, json));
  if (!a) return;
  const { target, v } = a;
  const label = `${req.method} ${hostHeader(target)}`;
  // An upgrade's bytes follow a 101 the proxy verified (upgrade.ts): not an opaque tunnel to content-check.
  const upstream = await dialForTunnel(core, rec, t0, socket, v, target.port, { target: label, json, status: null, checkContent: false });
  if (!upstream) return;
  const asked = upgradeTokens(req.headers.upgrade);
  const headers = a.headers;
  headers.push('Connection', 'Upgrade', 'Upgrade', asked.join(', '));
  const fail = (status: number, reason: 'upstream_error' | 'upstream_timeout', error: string) => {
    upstream.destroy();
    settleVet(rec, v, status, reason);
    rec.detail = { ...rec.detail, error };
    refuseSocket(socket, { status, reason, message: error, decisionId: rec.id, target: label }, json);
    emit(core, rec, t0);
  };
  const gone = () => upstream.destroy();
  socket.once('close', gone);
  let answer: UpgradeAnswer;
  try {
    answer = await sendUpgrade(upstream, { method: req.method ?? 'GET', path: a.path + a.query, headers, asked, timeoutMs: core.limits.requestIdleMs });
  } catch (err) {
    socket.off('close', gone);
    if (err instanceof UpgradeTimeoutError) return fail(504, 'upstream_timeout', err.message);
    return fail(502, 'upstream_error', errorText(err));
  }
  socket.off('close', gone);
  await completeUpgrade(core, rec, t0, socket, { method: req.method ?? 'GET', asked, head }, answer, fail, () => core.reattach(socket, head));
}

/**
 * What the origin answered an upgrade request, acted on: a matching 101 is spliced (with any bytes
 * either side sent early), a mismatched switch is refused 502, any other answer is relayed and `then`
 * decides what becomes of the client connection. Shared by the plain path and inspected tunnels.
 */
export async function completeUpgrade(
  core: ProxyCore,
  rec: DecisionRecord,
  t0: number,
  socket: Socket,
  ask: { method: string; asked: string[]; head: Buffer },
  answer: UpgradeAnswer,
  fail: (status: number, reason: 'upstream_error', error: string) => void,
  then: () => void,
): Promise<void> {
  rec.status = answer.res.statusCode ?? null;
  if (answer.kind === 'mismatch') {
    answer.socket.destroy();
    const got = String(answer.res.headers.upgrade ?? '').slice(0, 100);
    return fail(502, 'upstream_error', `the origin answered ${answer.res.statusCode} with Upgrade "${got}" to a request for "${ask.asked.join(', ')}"`);
  }
  if (socket.destroyed) {
    (answer.kind === 'switched' ? answer.socket : answer.res).destroy();
    return emit(core, rec, t0);
  }
  if (answer.kind === 'switched') {
    const switched = { connection: 'Upgrade', upgrade: upgradeTokens(answer.res.headers.upgrade).join(', '), 'x-agent-egress-decision': rec.id };
    socket.write(responseHead(ask.method, answer.res, switched).head);
    if (answer.head.length) socket.write(answer.head);
    if (ask.head.length) answer.socket.write(ask.head);
    splice(core, rec, t0, socket, answer.socket);
    return;
  }
  await relayPlain(core, rec, t0, socket, ask.method, answer.res, then);
}

/**
 * Relay an origin's ordinary answer to an upgrade request on the raw client socket, re-framed. `then`
 * runs once the whole answer went out: the plain path hands the socket back to the HTTP server with the
 * bytes sent after the request (so a pipelined request is parsed and decided), an inspected tunnel
 * closes it.
 */
async function relayPlain(core: ProxyCore, rec: DecisionRecord, t0: number, socket: Socket, method: string, res: IncomingMessage, then: () => void): Promise<void> {
  const out = responseHead(method, res, { 'x-agent-egress-decision': rec.id });
  let down = 0;
  const done = () => {
    rec.bytesDown = down;
    res.socket?.destroy();
    emit(core, rec, t0);
  };
  socket.write(out.head);
  try {
    for await (const c of res) {
      const chunk = c as Buffer;
      down += chunk.length;
      if (chunk.length === 0) continue;
      const ok = out.chunked ? socket.write(`${chunk.length.toString(16)}\r\n`) && socket.write(chunk) && socket.write('\r\n') : socket.write(chunk);
      if (!ok && !socket.destroyed) await new Promise<void>((r) => socket.once('drain', r).once('close', r));
      if (socket.destroyed) break;
    }
  } catch (err) {
    // The origin broke off mid-body: the client cannot be told in-band any more, so cut it.
    rec.detail = { ...rec.detail, error: errorText(err), truncated: true };
    socket.destroy();
    return done();
  }
  if (socket.destroyed || !res.complete) {
    if (!res.complete) rec.detail = { ...rec.detail, truncated: true };
    socket.destroy();
    return done();
  }
  if (out.chunked) socket.write('0\r\n\r\n');
  done();
  then();
}
