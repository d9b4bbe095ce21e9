import type { Socket } from 'node:net';
import type { Seen } from './judge.js';
import { sniff, sniffLimit } from './sniff.js';

export interface PeekOptions {
  timeoutMs: number;
  maxHeaderBytes: number;
}

/**
 * Read a client's first bytes until the sniffer can say what they are, the deadline passes, the client
 * ends, or the bound is reached. Resolves with every byte read (the caller puts them back with unshift,
 * so they are relayed unchanged) and the socket paused. Never rejects.
 */
export function peek(socket: Socket, opts: PeekOptions): Promise<{ buf: Buffer; seen: Seen }> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    const limit = sniffLimit(opts);
    let settled = false;
    const done = (seen: Seen) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      resolve({ buf, seen });
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const s = sniff(buf, opts);
      if (s.kind !== 'more') return done(s);
      if (buf.length >= limit) done({ kind: 'limit', bytes: buf.length });
    };
    const onEnd = () => done({ kind: 'closed', bytes: buf.length });
    const timer = setTimeout(() => done({ kind: 'timeout', bytes: buf.length }), opts.timeoutMs);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    // A socket handed over by the HTTP server (CONNECT) may be paused; data already buffered comes first.
    socket.resume();
  });
}
