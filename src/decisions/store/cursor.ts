/** A page cursor: the (time, sequence) of the last record shown, opaque to callers. */
export function encodeCursor(timeMs: number, seq: number): string {
  return Buffer.from(`${timeMs}:${seq}`).toString('base64url');
}

export function decodeCursor(c: string): { timeMs: number; seq: number } {
  const m = /^(-?\d{1,16}):(\d{1,16})$/.exec(Buffer.from(c, 'base64url').toString());
  if (!m) throw new CursorError('cursor: not a cursor from a previous page');
  return { timeMs: Number(m[1]), seq: Number(m[2]) };
}

/** A tail cursor is a plain sequence number. */
export function decodeTailCursor(c: string): number {
  if (!/^\d{1,16}$/.test(c)) throw new CursorError('cursor: not a tail cursor');
  return Number(c);
}

export class CursorError extends Error {
  override name = 'CursorError';
}
