import type { Socket } from 'node:net';
import type { DecisionRecord } from '../decisions/record.js';
import { emit, type ProxyCore } from './core.js';
import { dialVetted, DialError } from './dial.js';
import { pairSockets } from './pair.js';
import { roundMs } from '../decisions/record.js';
import { settleVet } from './record.js';
import { refuseSocket, type Refusal } from './respond.js';
import { gateTunnel, recordTarget, tunnelCheck, type TunnelCheck } from '../capture/gate.js';
import { vetDestination, type ClientLink, type VetContext, type VetOutcome } from './vet.js';
import type { Target } from '../net/target.js';

/**
 * vetDestination for a tunnel (CONNECT, SOCKS5), with what it found written into the tunnel's record;
 * a refusal is settled here, and the caller answers it in its own protocol and emits.
 */
export async function vetTunnel(ctx: VetContext, rec: DecisionRecord, agent: string | null, target: Target, client?: ClientLink): Promise<VetOutcome> {
  // With the client's socket, a request held for an approval stops waiting when the client goes away.
  const v = await vetDestination(ctx, agent, target, undefined, undefined, client);
  rec.timings.dnsMs = roundMs(v.dnsMs);
  if (v.refused) rec.detail = { ...rec.detail, refusedAddresses: v.refused };
  if (!v.ok) settleVet(rec, v, v.status);
  return v;
}

/**
 * How a tunnel entry point that does not speak HTTP (SOCKS5) answers its client: a refusal or failure,
 * and "connected" with the upstream socket (whose local end is the bound address). Without it, the
 * client gets HTTP (a refusal, or 200 Connection established).
 */
export interface TunnelReplies {
  refuse(r: Refusal): void;
  established(upstream: Socket): void;
}

/**
 * Upstream sockets dialled for an opaque tunnel, with what the tunnel was authorised for: `splice`
 * checks the client's first bytes against it before relaying any (the tunnel content check). An
 * Upgrade's socket (dialled with checkContent: false, spliced after its 101) is not checked.
 */
const CHECKS = new WeakMap<Socket, TunnelCheck>();

/**
 * Connect a tunnel's upstream to the first vetted address that answers. On failure the client gets
 * 502/504 and the record says what broke; the verdict stays (the policy allowed it), and null is returned.
 */
export async function dialForTunnel(
  core: ProxyCore,
  rec: DecisionRecord,
  t0: number,
  client: Socket,
  v: VetOutcome & { ok: true },
  port: number,
  refusal: {
    target?: string;
    json: boolean;
    status: number | null;
    /** Tell the client in its own protocol (a SOCKS5 reply, a transparent client's); default: an HTTP refusal on the socket. */
    answer?: (r: Refusal) => void;
    /** false only for an Upgrade, whose bytes follow a verified 101; every opaque tunnel is checked. */
    checkContent?: boolean;
  },
): Promise<Socket | null> {
  const tc = performance.now();
  try {
    // An opaque tunnel's upstream is only ever relayed (pair.ts reads it); an Upgrade's is read for its 101 first.
    const d = await dialVetted(v.addresses, port, core.limits.connectTimeoutMs, { relay: refusal.checkContent !== false });
    rec.address = d.address;
    rec.timings.connectMs = roundMs(performance.now() - tc);
    settleVet(rec, v, refusal.status);
    if (refusal.checkContent === false) return d.socket;
    const target = recordTarget(rec);
    // A record whose host does not read back as a target cannot be checked: the judge then refuses.
    const t = target ?? { host: { kind: 'name' as const, value: '' }, port };
    CHECKS.set(d.socket, tunnelCheck(v.policy, rec.agent, t, d.address, v.decision?.effects?.protocols, v.mode, v.rule));
    return d.socket;
  } catch (err) {
    const timeout = err instanceof DialError && err.timeout;
    const status = timeout ? 504 : 502;
    const reason = timeout ? 'upstream_timeout' : 'upstream_error';
    rec.timings.connectMs = roundMs(performance.now() - tc);
    rec.address = v.addresses[0];
    settleVet(rec, v, status, reason);
    rec.detail = { ...rec.detail, error: (err as Error).message };
    const cause = err instanceof DialError ? err.code : undefined;
    const r: Refusal = { status, reason, decisionId: rec.id, target: refusal.target, cause };
    if (refusal.answer) refusal.answer(r);
    else refuseSocket(client, r, refusal.json);
    emit(core, rec, t0);
    return null;
  }
}

/**
 * Count a tunnel as open until the returned `finish` runs, once, whoever calls it first (either side
 * closing, an error, the idle timer, or shutdown draining `core.tunnels`). `release` tears the sockets
 * down and says how many bytes went each way; the tunnel's record is emitted then.
 */
export function trackTunnel(core: ProxyCore, rec: DecisionRecord, t0: number, release: () => { up: number; down: number }): () => void {
  core.counters.activeTunnels++;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    core.counters.activeTunnels--;
    core.tunnels.delete(finish);
    const bytes = release();
    rec.bytesUp = bytes.up;
    rec.bytesDown = bytes.down;
    emit(core, rec, t0);
  };
  core.tunnels.add(finish);
  return finish;
}

/**
 * Splice a client socket to a connected upstream socket (CONNECT and Upgrade alike). Whatever the
 * caller had to say first (the 200, the upgrade request head, pipelined bytes) is written before this.
 * The tunnel's record is emitted once, when it ends, with the bytes each way.
 */
export function splice(core: ProxyCore, rec: DecisionRecord, t0: number, client: Socket, upstream: Socket): void {
  const finish = trackTunnel(core, rec, t0, () => {
    client.destroy();
    upstream.destroy();
    return { up: upstream.bytesWritten, down: upstream.bytesRead };
  });
  upstream.on('error', finish);
  const check = CHECKS.get(upstream);
  if (check) {
    CHECKS.delete(upstream);
    client.on('close', finish);
    client.on('error', finish);
    upstream.on('close', finish);
    gateTunnel(core, rec, client, check, finish, (first) => {
      upstream.off('close', finish);
      if (upstream.destroyed) return finish();
      // The checked bytes go first, straight to the upstream (not put back on the client to be read again).
      if (first.length > 0) upstream.write(first);
      relayBoth(core, client, upstream, finish);
    });
    return;
  }
  client.on('close', finish);
  client.on('error', finish);
  relayBoth(core, client, upstream, finish);
}

function relayBoth(core: ProxyCore, client: Socket, upstream: Socket, finish: () => void): void {
  // Upstream closing first is the normal end of most tunnels: its 'end' has already ended the client side,
  // so let its buffered bytes drain and wait for the client to close (briefly) instead of cutting them.
  upstream.on('close', () => {
    if (!client.writableEnded) client.end();
    // The client may be paused (upstream's buffer was full): keep reading (and dropping) so the client's
    // FIN is seen and the tunnel closes now, not at the 5 s fallback.
    client.resume();
    client.setTimeout(5_000, finish);
  });
  // Activity either way reads or writes the client socket, so one idle timer covers both directions.
  client.setTimeout(core.limits.tunnelIdleMs, finish);
  client.setNoDelay(true);
  pairSockets(client, upstream);
}
