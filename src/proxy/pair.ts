import type { Socket } from 'node:net';

/**
 * Relays bytes both ways between two sockets, with backpressure and half-close, like two pipe() calls
 * but without their per-stream closures: the handlers are shared module functions that find the other
 * side on the socket. Per idle tunnel that is about 20 closures and their contexts fewer (heap
 * snapshot: ~2.5 KiB of the ~8.7 KiB of JavaScript objects a pipe()d tunnel holds), and a cheaper setup.
 *
 * An upstream socket dialled with `relayReadOptions()` (opaque tunnels) is read without 'data' events,
 * into buffers this module owns (see `onRelayRead`): a bulk download then costs no allocation per chunk.
 */
const PEER = Symbol('agent-egress.peer-socket');
/** Set on a socket dialled with relayReadOptions: it emits no 'data', its reads come to onRelayRead. */
const RELAY = Symbol('agent-egress.relay-read');
/** Bytes a relay-read socket received before it was paired, copied, to write first once paired. */
const EARLY = Symbol('agent-egress.early-bytes');
type Paired = Socket & { [PEER]: Socket };
type RelayRead = Socket & { [PEER]?: Socket; [RELAY]: true; [EARLY]?: Buffer };

function onData(this: Paired, chunk: Buffer): void {
  if (!this[PEER].write(chunk)) this.pause();
}

function onDrain(this: Paired): void {
  // The other side's reader was paused by a full write buffer here.
  this[PEER].resume();
}

function onEnd(this: Paired): void {
  // The FIN goes on to the other side, as pipe() does. Client sockets are not half-open (the listener's
  // default), so a client's FIN also ends the tunnel towards it: a tunnel ends when either side leaves,
  // which is what records and shutdown rely on. Clients that half-close and then wait for the answer
  // (`nc -N`) are not served; see docs/performance.md, "seen and left alone".
  const peer = this[PEER];
  if (!peer.writableEnded) peer.end();
}

/**
 * Reads with Node's `onread`: libuv reads straight into a buffer handed out here, instead of a fresh
 * 64 KiB allocation per read that a FastBuffer wraps and the streams machinery pushes (malloc/brk
 * churn, page faults and the "external memory pressure" collections that made S2 cost twice the
 * floor). Sockets start on one SHARED buffer, whose bytes are copied out before the read returns, so an
 * idle tunnel holds no read buffer of its own. A read of BULK bytes or more gives the socket its own
 * buffer: the next reads are written to the peer without a copy, and the buffer is reused as long as
 * the peer's socket took each chunk whole (its write queue empty again); a chunk still queued keeps
 * its buffer, and the socket gets another. A short read hands the buffer back to a small free list.
 */
const READ_SIZE = 64 * 1024;
const BULK = 16 * 1024;
const SHARED = Buffer.allocUnsafeSlow(READ_SIZE);
const FREE: Buffer[] = [];
const FREE_MAX = 16;
/**
 * The buffer the socket just read from reads into next. Node calls the buffer function right after the
 * read callback, for the same socket, but without it as `this`: the callback leaves its choice here.
 */
let next: Buffer = SHARED;

function takeBuffer(): Buffer {
  return FREE.pop() ?? Buffer.allocUnsafeSlow(READ_SIZE);
}

function onRelayRead(this: RelayRead, n: number, buf: Buffer): boolean {
  const peer = this[PEER];
  if (buf === SHARED) {
    // The next read on any socket overwrites SHARED: the bytes leave it now, copied.
    const copy = Buffer.allocUnsafe(n);
    SHARED.copy(copy, 0, 0, n);
    next = n >= BULK ? takeBuffer() : SHARED;
    return peer === undefined ? holdEarly(this, copy) : peer.write(copy);
  }
  if (peer === undefined) {
    // Not paired yet (a server that talks first, while the client's bytes are being checked).
    next = buf;
    return holdEarly(this, Buffer.from(buf.subarray(0, n)));
  }
  const ok = peer.write(buf.subarray(0, n));
  if (peer.writableLength > 0) {
    // The chunk (or a part of it) waits in the peer's queue, still in this buffer: leave it there.
    next = n >= BULK ? takeBuffer() : SHARED;
  } else if (n < BULK) {
    if (FREE.length < FREE_MAX) FREE.push(buf);
    next = SHARED;
  } else {
    next = buf;
  }
  return ok;
}

/** Keep what arrived before the splice, and read no more until then (as a paused stream would). */
function holdEarly(s: RelayRead, chunk: Buffer): false {
  const had = s[EARLY];
  s[EARLY] = had === undefined ? chunk : Buffer.concat([had, chunk]);
  return false;
}

function nextRelayBuffer(): Buffer {
  const b = next;
  next = SHARED;
  return b;
}

/**
 * `net.connect` options for a socket whose reads go through this module (the upstream of an opaque
 * tunnel); the socket must be passed to `markRelayRead` before it connects.
 */
export function relayReadOptions(): { onread: { buffer: () => Buffer; callback: (n: number, buf: Buffer) => boolean } } {
  return { onread: { buffer: nextRelayBuffer, callback: onRelayRead } };
}

export function markRelayRead(s: Socket): void {
  (s as RelayRead)[RELAY] = true;
}

function isRelayRead(s: Socket): s is RelayRead {
  return (s as RelayRead)[RELAY] === true;
}

export function pairSockets(a: Socket, b: Socket): void {
  (a as Paired)[PEER] = b;
  (b as Paired)[PEER] = a;
  for (const s of [a, b]) {
    if (isRelayRead(s)) {
      const early = s[EARLY];
      if (early !== undefined) {
        s[EARLY] = undefined;
        s[PEER]!.write(early);
      }
    } else {
      s.on('data', onData);
    }
    s.on('drain', onDrain);
    s.on('end', onEnd);
    // As pipe() does: a socket paused before the handover (by the HTTP server) starts flowing.
    s.resume();
  }
}
