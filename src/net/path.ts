/**
 * The one request-path normalisation, used by the proxy (plain HTTP and inspected HTTPS) and by
 * `check`, and to normalise the path globs of a policy. Rules judge the normalised path and the
 * proxy forwards exactly that path, so the origin never sees a path other than the one judged.
 *
 * Fixed answers (docs/policy.md, "Request rules"):
 * - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded; other escapes keep their
 *   bytes with upper-case hex;
 * - dot segments are removed (RFC 3986 §5.2.4), also when written %2E; `..` above the root stays at the root;
 * - runs of `/` collapse to one;
 * - refused (PathError → 400): NUL (raw or %00), other control bytes, `%2F` (an encoded slash:
 *   origins disagree on whether it separates segments), `\` and `%5C`, `;` in the path (path
 *   parameters: some servers strip them before routing), malformed escapes, and escapes whose bytes are
 *   not valid UTF-8 (overlong forms such as %C0%AE included);
 * - other printable ASCII a path may not carry raw (`"<>^`{|}` and space) is percent-encoded; raw
 *   non-ASCII is refused.
 */
export class PathError extends Error {
  override name = 'PathError';
}

const HEX = '0123456789ABCDEF';
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** RFC 3986 pchar minus `%` (handled apart) plus `/`: may stay raw in a normalised path. */
function rawOk(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e || // - . _ ~
    c === 0x21 || c === 0x24 || c === 0x26 || c === 0x27 || c === 0x28 || c === 0x29 || // ! $ & ' ( )
    c === 0x2a || c === 0x2b || c === 0x2c || c === 0x3d || // * + , =
    c === 0x3a || c === 0x40 || c === 0x2f // : @ /
  );
}

function unreserved(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

const enc = (b: number): string => '%' + HEX[b >> 4] + HEX[b & 15];

/**
 * Normalise the path part of a request target (no query, no fragment). Throws PathError with a
 * message safe to show the client.
 */
export function normalizePath(raw: string): string {
  if (raw === '' || raw === '*') throw new PathError('the path must start with "/"');
  if (raw.charCodeAt(0) !== 0x2f) throw new PathError('the path must start with "/"');
  if (alreadyNormal(raw)) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) {
      // A run of escapes is decoded as bytes and checked as UTF-8 as a whole (multi-byte characters).
      const bytes: number[] = [];
      let j = i;
      while (j < raw.length && raw.charCodeAt(j) === 0x25) {
        const h = hexVal(raw.charCodeAt(j + 1));
        const l = hexVal(raw.charCodeAt(j + 2));
        if (h < 0 || l < 0) throw new PathError('malformed percent-escape in the path');
        bytes.push(h * 16 + l);
        j += 3;
      }
      try {
        UTF8.decode(Uint8Array.from(bytes));
      } catch {
        throw new PathError('percent-escapes in the path are not valid UTF-8');
      }
      for (const b of bytes) {
        if (b === 0x00) throw new PathError('NUL in the path');
        if (b === 0x2f) throw new PathError('encoded "/" (%2F) in the path is refused: origins disagree on its meaning');
        if (b === 0x5c) throw new PathError('encoded "\\" (%5C) in the path is refused');
        out += unreserved(b) ? String.fromCharCode(b) : enc(b);
      }
      i = j - 1;
      continue;
    }
    if (c === 0x5c) throw new PathError('"\\" in the path is refused');
    if (c === 0x3b) throw new PathError('";" (path parameters) in the path is refused');
    if (c < 0x20 || c === 0x7f) throw new PathError('control character in the path');
    if (c > 0x7e) throw new PathError('raw non-ASCII character in the path (percent-encode it)');
    out += rawOk(c) ? raw[i] : enc(c);
  }
  return removeDotSegments(out);
}

/**
 * True when normalising would return `raw` unchanged, so most requests skip the rebuild: every
 * character may stay raw (no escape, nothing to encode or refuse), and no "//" or "/." exists, so there
 * is no empty, "." or ".." segment for removeDotSegments to drop. Conservative: anything else takes the
 * full path below.
 */
function alreadyNormal(raw: string): boolean {
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (!rawOk(c)) return false;
    if (c === 0x2f) {
      const n = raw.charCodeAt(i + 1);
      if (n === 0x2f || n === 0x2e) return false;
    }
  }
  return true;
}

/** RFC 3986 §5.2.4 on a path that starts with "/", with empty segments collapsed. */
function removeDotSegments(path: string): string {
  const segs = path.split('/');
  const keep: string[] = [];
  // A trailing "/", "." or ".." leaves a directory: keep the trailing slash.
  const last = segs[segs.length - 1];
  const trailing = segs.length > 1 && (last === '' || last === '.' || last === '..');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i];
    if (s === '' || s === '.') continue;
    if (s === '..') keep.pop();
    else keep.push(s);
  }
  if (keep.length === 0) return '/';
  return '/' + keep.join('/') + (trailing ? '/' : '');
}

/** The query part as forwarded: raw, but never with control bytes or NUL (refused like the path's). */
export function checkQuery(query: string): void {
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c > 0x7e) throw new PathError('control or non-ASCII character in the query');
  }
  if (/%00/.test(query)) throw new PathError('NUL in the query');
}
