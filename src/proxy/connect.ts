import type { Socket } from 'node:net';
import { formatAuthority, parseConnectTarget, TargetError } from '../net/target.js';
import { clientLabel, destroySelf, emit, identify, type ProxyCore } from './core.js';
import { refuseSocket, wantsJson } from './respond.js';
import { startRecord } from '../decisions/record.js';
import { checkHead } from './conformance.js';
import type { RequestHead } from './connect-head.js';
import { settle, settleVet } from './record.js';
import { dialForTunnel, splice, vetTunnel } from './tunnel.js';
import { handleInspected } from '../inspect/tunnel.js';

/**
 * CONNECT host:port. The client hears 200 only once the upstream socket is connected to a vetted
 * address; the client's first bytes (pipelined after the request head or not) are then checked against
 * the authorised name and the rule's protocols (src/capture) and relayed unchanged.
 */
export async function handleConnect(core: ProxyCore, req: RequestHead, socket: Socket, head: Buffer): Promise<void> {
  const t0 = performance.now();
  socket.on('error', destroySelf);
  const ctx = core.context();
  const rec = startRecord(clientLabel(socket), 'CONNECT', req.url ?? '', null, ctx.policy.hash);
  const json = wantsJson(req.headers.accept);

  if (core.draining()) {
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'shutting_down', rule: null, status: 503 });
    refuseSocket(socket, { status: 503, reason: 'shutting_down', decisionId: rec.id }, json);
    return emit(core, rec, t0);
  }

  const bad = checkHead(req);
  if (bad) {
    rec.host = (req.url ?? '').slice(0, 255);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: bad.status });
    rec.detail = { error: bad.message };
    refuseSocket(socket, { status: bad.status, reason: 'bad_request', message: bad.message, decisionId: rec.id }, json);
    return emit(core, rec, t0);
  }

  let target;
  try {
    target = parseConnectTarget(req.url ?? '');
  } catch (err) {
    const message = err instanceof TargetError ? `bad CONNECT target: ${err.message}` : 'bad CONNECT target';
    rec.host = (req.url ?? '').slice(0, 255);
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'bad_request', rule: null, status: 400 });
    rec.detail = { error: message };
    refuseSocket(socket, { status: 400, reason: 'bad_request', message, decisionId: rec.id }, json);
    return emit(core, rec, t0);
  }
  rec.host = target.host.value;
  rec.port = target.port;
  const authority = formatAuthority(target);

  const who = identify(ctx, req.headers, socket);
  if (!who.ok) {
    settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'auth_required', rule: null, status: 407 });
    refuseSocket(socket, { status: 407, reason: 'auth_required', message: who.message, decisionId: rec.id, target: authority }, json);
    return emit(core, rec, t0);
  }
  rec.agent = who.agent;

  const v = await vetTunnel(ctx, rec, who.agent, target, socket);
  if (!v.ok) {
    refuseSocket(socket, { status: v.status, reason: v.reason, rule: rec.rule, message: v.message, hint: v.hint?.text, decisionId: rec.id, target: authority }, json);
    return emit(core, rec, t0);
  }
  if (socket.destroyed) {
    // The client gave up while we resolved: record the decision, open nothing.
    settleVet(rec, v, null);
    return emit(core, rec, t0);
  }

  if (v.decision?.effects?.inspect) {
    if (!core.inspect) {
      // Cannot happen with a policy that loaded (an inspecting rule needs a CA); fail closed all the same.
      settle(rec, { verdict: 'deny', mode: 'enforce', reason: 'upstream_tls', rule: v.rule, status: 502 });
      refuseSocket(socket, { status: 502, reason: 'upstream_tls', rule: v.rule, message: 'inspection is not configured', decisionId: rec.id, target: authority }, json);
      return emit(core, rec, t0);
    }
    return handleInspected(core, core.inspect.inspector, core.inspect.server, rec, t0, socket, head, ctx, who.agent, target, v, json);
  }
  const upstream = await dialForTunnel(core, rec, t0, socket, v, target.port, { target: authority, json, status: 200 });
  if (!upstream) return;

  if (socket.destroyed) {
    upstream.destroy();
    return emit(core, rec, t0);
  }
  socket.write(`HTTP/1.1 200 Connection established\r\nX-Agent-Egress-Decision: ${rec.id}\r\n\r\n`);
  // Bytes pipelined after the CONNECT head are the tunnel's first: back on the socket for the content check.
  if (head.length > 0) socket.unshift(head);
  splice(core, rec, t0, socket, upstream);
}
