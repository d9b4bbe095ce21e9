import type { IncomingHttpHeaders } from 'node:http';
import { checkRequestLine } from './conformance.js';

/**
 * A strict parser for a CONNECT request head (RFC 9112 §2-§5, RFC 9110 §5), so that a plain listener
 * can take a CONNECT without handing the connection to node:http (llhttp, an IncomingMessage, the
 * server's per-connection listeners), which costs most of a short tunnel's front half.
 *
 * It rejects every head llhttp (Node 20, strict mode) rejects (test/proxy/connect-head.test.ts fuzzes
 * the two against each other) and a little more:
 * - every line ends in CRLF; a bare LF or CR is refused (llhttp refuses them too, except in the empty
 *   lines before the request line, which RFC 9112 §2.2 lets a server skip and checkRequestLine accepts);
 * - the request line is `CONNECT SP request-target SP HTTP/x.y` with single spaces (checkRequestLine);
 * - field names are tokens, values field-vchar / SP / HTAB (no control characters, DEL or NUL), obs-fold
 *   refused (RFC 9112 §5.2);
 * - a CONNECT has no content (RFC 9110 §9.3.6): Transfer-Encoding is refused, and Content-Length only
 *   a single all-digit 0 (llhttp refuses duplicate, empty or non-digit values; we refuse a non-zero one too);
 * - the whole head, from its first byte to the empty line, is at most maxHeaderBytes (431), and at most
 *   MAX_HEADER_FIELDS fields (Node's maxHeadersCount; past it Node silently drops fields, we refuse).
 * Versions: 1.0 and 1.1 are taken; 0.9 and 2.0 (which llhttp takes) are parsed too, so that checkHead
 * answers them exactly as it does for every other request (400 / 505).
 */

/** The parts of a request head handleConnect and checkHead read: an IncomingMessage has them too. */
export interface RequestHead {
  method?: string;
  url?: string;
  httpVersion: string;
  httpVersionMajor: number;
  httpVersionMinor: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
}

export const MAX_HEADER_FIELDS = 2000;

export interface HeadError {
  status: 400 | 431;
  /** For the record's detail.error: llhttp's code where llhttp refuses the same head, else our own. */
  code: string;
  /** One line for the client; never header values. */
  message: string;
}

const MALFORMED = 'malformed HTTP request';
const CONNECT_SP = 'CONNECT ';
/** What a request line ends with, `d` a digit: a partial line must be a prefix of it. */
const VERSION_SHAPE = 'HTTP/d.d\r';
const REQUEST_LINE_SHAPE = checkRequestLine('')?.message ?? 'malformed request line';

function fail(code: string, message = MALFORMED, status: 400 | 431 = 400): HeadError {
  return { status, code, message };
}

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

function table(chars: string, ranges: [number, number][] = []): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  for (const [a, b] of ranges) for (let c = a; c <= b; c++) t[c] = 1;
  return t;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** RFC 9110 §5.6.2 tchar. */
const TOKEN = table("!#$%&'*+-.^_`|~" + ALNUM);
/** RFC 9110 §5.5 field-vchar (VCHAR / obs-text), SP and HTAB. */
const VALUE = table('\t ', [
  [0x21, 0x7e],
  [0x80, 0xff],
]);
/**
 * The authority of a CONNECT target, up to a `/` or `?`: the characters llhttp takes there (userinfo
 * characters, `[`, `]`, `@`). Whatever follows a `/` or `?` is printable ASCII here and is refused as a
 * target by parseConnectTarget in any case.
 */
const AUTHORITY = table("-_.!~*'()%;:&=+$,[]@" + ALNUM);

/** Node's duplicate rules (_http_incoming matchKnownFields): these keep the first value and drop the rest. */
const FIRST_WINS = new Set([
  'age', 'host', 'from', 'etag', 'server', 'referer', 'expires', 'location', 'user-agent', 'retry-after', 'content-type',
  'max-forwards', 'authorization', 'last-modified', 'content-length', 'if-modified-since', 'proxy-authorization', 'if-unmodified-since',
]);

/** A parsed CONNECT head, shaped like the IncomingMessage node:http would have built. */
export class ConnectHead implements RequestHead {
  readonly method = 'CONNECT';
  readonly httpVersion: string;
  private built: IncomingHttpHeaders | null = null;
  constructor(
    readonly url: string,
    readonly httpVersionMajor: number,
    readonly httpVersionMinor: number,
    readonly rawHeaders: string[],
  ) {
    this.httpVersion = `${httpVersionMajor}.${httpVersionMinor}`;
  }

  /** Built on first read, as Node does: lower-case names, duplicates joined or dropped by Node's rules. */
  get headers(): IncomingHttpHeaders {
    if (this.built) return this.built;
    const dst: Record<string, string | string[] | undefined> = {};
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      const value = raw[i + 1];
      if (name === 'set-cookie') {
        const prev = dst[name];
        if (Array.isArray(prev)) prev.push(value);
        else dst[name] = [value];
      } else if (FIRST_WINS.has(name)) {
        if (dst[name] === undefined) dst[name] = value;
      } else {
        const prev = dst[name];
        dst[name] = typeof prev === 'string' ? prev + (name === 'cookie' ? '; ' : ', ') + value : value;
      }
    }
    return (this.built = dst as IncomingHttpHeaders);
  }
}

export type HeadResult = { head: ConnectHead; end: number } | { error: HeadError } | null;

/**
 * Incremental: feed it the bytes received so far (the same growing buffer each time); it parses each
 * complete line once, and answers null (need more), an error, or the head and where it ends (what
 * follows is the tunnel's first bytes).
 */
export class ConnectHeadParser {
  private pos = 0;
  private requestLine = false;
  private url = '';
  private major = 0;
  private minor = 0;
  private readonly raw: string[] = [];
  private contentLength = false;
  /** The unfinished last line is checked as it arrives (see precheck): where, and how far it got. */
  private pLine = -1;
  private pAt = 0;
  private pPhase = 0;
  private pK = 0;

  constructor(private readonly maxHeaderBytes: number) {}

  feed(buf: Buffer): HeadResult {
    const max = this.maxHeaderBytes;
    for (;;) {
      const lf = buf.indexOf(LF, this.pos);
      if (lf === -1 || lf >= max) {
        if (buf.length > max) return { error: fail('HPE_HEADER_OVERFLOW', `request head larger than ${max} bytes`, 431) };
        const bad = this.precheck(buf);
        return bad ? { error: bad } : null;
      }
      const start = this.pos;
      this.pos = lf + 1;
      if (!this.requestLine) {
        // Empty lines before the request line (RFC 9112 §2.2), CRLF or bare LF, as checkRequestLine takes them.
        if (lf === start || (lf === start + 1 && buf[start] === CR)) continue;
        const bad = this.parseRequestLine(buf, start, lf);
        if (bad) return { error: bad };
        continue;
      }
      if (lf === start || buf[lf - 1] !== CR) return { error: fail('HPE_CR_EXPECTED') };
      if (lf === start + 1) {
        return { head: new ConnectHead(this.url, this.major, this.minor, this.raw), end: lf + 1 };
      }
      const bad = this.parseField(buf, start, lf - 1);
      if (bad) return { error: bad };
    }
  }

  /**
   * The line still being received can already be wrong (llhttp refuses a bad byte the moment it
   * arrives): refuse it now rather than at the head deadline. Only the bytes new since the last call are
   * looked at, so a head sent a byte at a time costs no more than one sent at once. The complete line is
   * parsed in full all the same; this only has to accept every prefix of a line that parses.
   */
  private precheck(buf: Buffer): HeadError | null {
    if (this.pLine !== this.pos) {
      this.pLine = this.pos;
      this.pAt = this.pos;
      this.pPhase = 0;
      this.pK = 0;
    }
    const end = buf.length;
    for (let i = this.pAt; i < end; i++) {
      const bad = this.requestLine ? this.fieldByte(buf[i]) : this.requestByte(buf[i]);
      if (bad) return bad;
    }
    this.pAt = end;
    return null;
  }

  /** Phases: 0 name, 1 value, 2 after a CR (only LF may follow), 3 CR of the empty line. */
  private fieldByte(c: number): HeadError | null {
    switch (this.pPhase) {
      case 0:
        if (TOKEN[c]) this.pK++;
        else if (c === COLON && this.pK > 0) this.pPhase = 1;
        else if (c === CR && this.pK === 0) this.pPhase = 3;
        else return fail('HPE_INVALID_HEADER_TOKEN');
        return null;
      case 1:
        if (c === CR) this.pPhase = 2;
        else if (!VALUE[c]) return fail('HPE_INVALID_HEADER_TOKEN');
        return null;
      default:
        return fail('HPE_LF_EXPECTED');
    }
  }

  /** Phases: 0 `CONNECT `, 1 authority, 2 the rest of the target, 3 `HTTP/d.d` CR, 4 CR of an empty line. */
  private requestByte(c: number): HeadError | null {
    switch (this.pPhase) {
      case 0:
        if (c === CR && this.pK === 0) this.pPhase = 4;
        else if (c !== CONNECT_SP.charCodeAt(this.pK)) return fail('HPE_INVALID_METHOD');
        else if (++this.pK === CONNECT_SP.length) [this.pPhase, this.pK] = [1, 0];
        return null;
      case 1:
      case 2:
        if (c === SP) {
          if (this.pK === 0) return fail('request_line', REQUEST_LINE_SHAPE);
          [this.pPhase, this.pK] = [3, 0];
        } else if (this.pPhase === 1 && AUTHORITY[c]) this.pK++;
        else if (c >= 0x21 && c <= 0x7e && (this.pPhase === 2 || c === 0x2f || c === 0x3f)) [this.pPhase, this.pK] = [2, this.pK + 1];
        else return fail('HPE_INVALID_URL');
        return null;
      case 3: {
        const want = VERSION_SHAPE.charCodeAt(this.pK++);
        if (want === 0x64 /* d */ ? c >= 0x30 && c <= 0x39 : c === want) return null;
        return this.pK === 1 && c === SP ? fail('request_line', REQUEST_LINE_SHAPE) : fail('HPE_INVALID_VERSION');
      }
      default:
        return fail('HPE_LF_EXPECTED');
    }
  }

  private parseRequestLine(buf: Buffer, start: number, lf: number): HeadError | null {
    // The line shape (one SP each, a version) first, with the same answer as for every other method.
    const line = buf.toString('latin1', start, lf + 1);
    const shape = checkRequestLine(line);
    if (shape) return fail('request_line', shape.message);
    if (buf[lf - 1] !== CR) return fail('HPE_INVALID_VERSION');
    // checkRequestLine matched TOKEN SP target SP HTTP/d.d CRLF, so the split below is exact.
    const sp1 = line.indexOf(' ');
    const sp2 = line.indexOf(' ', sp1 + 1);
    if (line.slice(0, sp1) !== 'CONNECT') return fail('HPE_INVALID_METHOD', 'not a CONNECT request');
    const major = line.charCodeAt(sp2 + 6) - 48;
    const minor = line.charCodeAt(sp2 + 8) - 48;
    if (line.length !== sp2 + 11) return fail('HPE_INVALID_VERSION');
    // The versions llhttp takes; checkHead then refuses 0.9 and 2.0 as it does on every listener.
    if (!((major === 1 && minor <= 1) || (major === 0 && minor === 9) || (major === 2 && minor === 0))) return fail('HPE_INVALID_VERSION');
    const t0 = start + sp1 + 1;
    const t1 = start + sp2;
    let i = t0;
    while (i < t1 && AUTHORITY[buf[i]]) i++;
    if (i < t1 && buf[i] !== 0x2f && buf[i] !== 0x3f) return fail('HPE_INVALID_URL');
    for (; i < t1; i++) if (buf[i] < 0x21 || buf[i] > 0x7e) return fail('HPE_INVALID_URL');
    this.url = line.slice(sp1 + 1, sp2);
    this.major = major;
    this.minor = minor;
    this.requestLine = true;
    return null;
  }

  /** One field line, [start, end) without its CRLF. */
  private parseField(buf: Buffer, start: number, end: number): HeadError | null {
    // A line starting with whitespace is obs-fold (RFC 9112 §5.2) or a field name with leading space: refused.
    let i = start;
    while (i < end && TOKEN[buf[i]]) i++;
    if (i === start || i === end || buf[i] !== COLON) return fail('HPE_INVALID_HEADER_TOKEN');
    const nameEnd = i++;
    while (i < end && (buf[i] === SP || buf[i] === HTAB)) i++;
    const v0 = i;
    let v1 = v0;
    for (; i < end; i++) {
      const c = buf[i];
      if (!VALUE[c]) return fail('HPE_INVALID_HEADER_TOKEN');
      if (c !== SP && c !== HTAB) v1 = i + 1;
    }
    if (this.raw.length >= 2 * MAX_HEADER_FIELDS) return fail('too_many_fields', `more than ${MAX_HEADER_FIELDS} header fields`, 431);
    const name = buf.toString('latin1', start, nameEnd);
    const value = buf.toString('latin1', v0, v1);
    const n = nameEnd - start;
    if (n === 14 && name.toLowerCase() === 'content-length') {
      if (this.contentLength) return fail('HPE_UNEXPECTED_CONTENT_LENGTH');
      this.contentLength = true;
      if (!/^[0-9]+$/.test(value)) return fail('HPE_INVALID_CONTENT_LENGTH');
      if (!/^0+$/.test(value)) return fail('connect_content', 'a CONNECT request has no content: Content-Length must be 0');
    } else if (n === 17 && name.toLowerCase() === 'transfer-encoding') {
      return fail('connect_content', 'a CONNECT request has no content: Transfer-Encoding is not allowed');
    }
    this.raw.push(name, value);
    return null;
  }
}

/** Parse a complete head in one call (tests, and any caller that has the whole buffer). */
export function parseConnectHead(buf: Buffer, maxHeaderBytes: number): HeadResult {
  return new ConnectHeadParser(maxHeaderBytes).feed(buf);
}
