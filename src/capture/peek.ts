import type { Socket } from 'node:net';
import type { Seen } from './judge.js';
import { sniff, sniffLimit } from './sniff.js';

export interface PeekOptions {
  timeoutMs: number;
  maxHeaderBytes: number;
}

/** What `peekWith` hands over: every byte read, unchanged (for the caller to relay), and what they are. */
export type PeekDone = (buf: Buffer, seen: Seen) => void;

/**
 * A peek in progress lives on its socket, and the listeners are module functions that find it there:
 * per tunnel one small object and one timer, instead of a promise and four closures with their contexts.
 */
const PEEK = Symbol('agent-egress.peek');
interface PeekState {
  buf: Buffer;
  limit: number;
  opts: PeekOptions;
  done: PeekDone;
  timer: NodeJS.Timeout;
}
type Peeking = Socket & { [PEEK]?: PeekState };

const EMPTY = Buffer.alloc(0);

function settle(s: Peeking, seen: Seen): void {
  const st = s[PEEK];
  if (st === undefined) return;
  s[PEEK] = undefined;
  clearTimeout(st.timer);
  s.off('data', onPeekData);
  s.off('end', onPeekEnd);
  s.off('close', onPeekEnd);
  s.pause();
  st.done(st.buf, seen);
}

function onPeekData(this: Peeking, chunk: Buffer): void {
  const st = this[PEEK];
  if (st === undefined) return;
  st.buf = st.buf.length === 0 ? chunk : Buffer.concat([st.buf, chunk]);
  const s = sniff(st.buf, st.opts);
  if (s.kind !== 'more') return settle(this, s);
  if (st.buf.length >= st.limit) settle(this, { kind: 'limit', bytes: st.buf.length });
}

function onPeekEnd(this: Peeking): void {
  settle(this, { kind: 'closed', bytes: this[PEEK]?.buf.length ?? 0 });
}

function onPeekTimeout(s: Peeking): void {
  settle(s, { kind: 'timeout', bytes: s[PEEK]?.buf.length ?? 0 });
}

/**
 * Read a client's first bytes until the sniffer can say what they are, the deadline passes, the client
 * ends, or the bound is reached; then, with the socket paused, `done` gets every byte read and what
 * was seen. `done` runs once, and never synchronously.
 */
export function peekWith(socket: Socket, opts: PeekOptions, done: PeekDone): void {
  const s = socket as Peeking;
  s[PEEK] = { buf: EMPTY, limit: sniffLimit(opts), opts, done, timer: setTimeout(onPeekTimeout, opts.timeoutMs, s) };
  s.on('data', onPeekData);
  s.on('end', onPeekEnd);
  s.on('close', onPeekEnd);
  // A socket handed over by the HTTP server (CONNECT) may be paused; data already buffered comes first.
  s.resume();
}

/** `peekWith` as a promise (transparent capture). Never rejects. */
export function peek(socket: Socket, opts: PeekOptions): Promise<{ buf: Buffer; seen: Seen }> {
  return new Promise((resolve) => peekWith(socket, opts, (buf, seen) => resolve({ buf, seen })));
}
