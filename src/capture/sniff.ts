/**
 * What a client's first bytes are, without consuming them: a TLS ClientHello (and its SNI), a plain
 * HTTP request head (and its Host), an SSH banner, or something else. Pure: the caller accumulates the
 * bytes and asks again while the answer is `more`. Strict: a ClientHello that breaks the wire format is
 * `malformed`, which every caller refuses (fail closed); nothing here throws on any input.
 */

/** The largest ClientHello handshake message accepted (real ones are 0.5-2 KiB; PQ key shares ~2 KiB). */
export const MAX_CLIENT_HELLO = 32 * 1024;
/** TLSPlaintext.length may not exceed 2^14 (RFC 8446 §5.1). */
const MAX_RECORD = 16 * 1024;
const MAX_METHOD = 20;
const SSH = Buffer.from('SSH-', 'latin1');

export type Protocol = 'tls' | 'http' | 'ssh' | 'other';

export type Sniff =
  | { kind: 'more' }
  /** sni: the host_name as sent (ASCII, not yet normalised), or null when the hello has none. */
  | { kind: 'tls'; sni: string | null }
  /** host: the single Host header value; target: the request target (absolute form carries its own authority). */
  | { kind: 'http'; method: string; target: string; host: string | null }
  | { kind: 'ssh' }
  | { kind: 'other' }
  | { kind: 'malformed'; protocol: 'tls' | 'http'; error: string };

export interface SniffOptions {
  /** Bound on an HTTP request head (the listener's --max-header-bytes). */
  maxHeaderBytes: number;
}

/** A ClientHello split over more records than this is refused (real clients use one or two). */
const MAX_RECORDS = 64;

/** The most bytes sniff() can ask for before it has answered: the caller's buffer bound. */
export function sniffLimit(opts: SniffOptions): number {
  return Math.max(opts.maxHeaderBytes, MAX_CLIENT_HELLO + 4 + 5 * MAX_RECORDS);
}

export function sniff(buf: Buffer, opts: SniffOptions): Sniff {
  if (buf.length === 0) return { kind: 'more' };
  if (buf[0] === 0x16) return sniffTls(buf);
  if (buf.length >= SSH.length && buf.subarray(0, SSH.length).equals(SSH)) return { kind: 'ssh' };
  // "S", "SS", "SSH" are also the start of a method: sniffHttp answers `more` for them.
  return sniffHttp(buf, opts.maxHeaderBytes);
}

class Malformed extends Error {}

/**
 * TLS records (type 22, version 3.x, 1..2^14 bytes) carrying handshake fragments, reassembled until the
 * first handshake message, which must be a ClientHello, is complete. A ClientHello may span records.
 */
function sniffTls(buf: Buffer): Sniff {
  if (buf.length >= 2 && buf[1] !== 0x03) return { kind: 'other' };
  const parts: Buffer[] = [];
  let have = 0;
  let need = -1; // handshake message length incl. its 4-byte header, once known
  let off = 0;
  try {
    while (need === -1 || have < need) {
      if (buf.length - off < 5) return { kind: 'more' };
      if (buf[off] !== 0x16) throw new Malformed(`record type ${buf[off]} before the ClientHello was complete`);
      if (buf[off + 1] !== 0x03 || buf[off + 2] > 0x04) throw new Malformed('bad record version');
      const len = buf.readUInt16BE(off + 3);
      if (len === 0 || len > MAX_RECORD) throw new Malformed(`bad record length ${len}`);
      const end = off + 5 + len;
      const frag = buf.subarray(off + 5, Math.min(end, buf.length));
      if (parts.length === MAX_RECORDS) throw new Malformed(`ClientHello split over more than ${MAX_RECORDS} records`);
      parts.push(frag);
      have += frag.length;
      if (need === -1 && have >= 4) {
        const head = parts.length === 1 ? frag : Buffer.concat(parts);
        if (head[0] !== 0x01) throw new Malformed(`first handshake message is type ${head[0]}, not ClientHello`);
        const mlen = head.readUIntBE(1, 3);
        if (mlen > MAX_CLIENT_HELLO) throw new Malformed(`ClientHello of ${mlen} bytes exceeds ${MAX_CLIENT_HELLO}`);
        need = 4 + mlen;
      }
      if (end > buf.length) {
        if (need !== -1 && have >= need) break; // the message ends inside this record: no need to wait for its tail
        return { kind: 'more' };
      }
      off = end;
    }
    const msg = (parts.length === 1 ? parts[0] : Buffer.concat(parts)).subarray(4, need);
    return { kind: 'tls', sni: parseClientHello(msg) };
  } catch (e) {
    if (e instanceof Malformed) return { kind: 'malformed', protocol: 'tls', error: e.message };
    // Any other error is a bug in this parser: still fail closed, never throw into the connection.
    return { kind: 'malformed', protocol: 'tls', error: 'unparseable ClientHello' };
  }
}

/** A bounds-checked reader: every read past the end is a Malformed, never a RangeError or a wrong value. */
class Reader {
  constructor(
    private readonly b: Buffer,
    private pos = 0,
    private readonly end = b.length,
  ) {}
  get left(): number {
    return this.end - this.pos;
  }
  skip(n: number, what: string): void {
    if (n > this.left) throw new Malformed(`truncated ${what}`);
    this.pos += n;
  }
  u8(what: string): number {
    if (this.left < 1) throw new Malformed(`truncated ${what}`);
    return this.b[this.pos++];
  }
  u16(what: string): number {
    if (this.left < 2) throw new Malformed(`truncated ${what}`);
    const v = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  /** A length-prefixed vector, as a reader of its own. */
  vec(lenBytes: 1 | 2, what: string): Reader {
    const n = lenBytes === 1 ? this.u8(what) : this.u16(what);
    if (n > this.left) throw new Malformed(`${what} overruns its container`);
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  bytes(): Buffer {
    return this.b.subarray(this.pos, this.end);
  }
}

/** RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2; returns the SNI host_name, or null. */
function parseClientHello(msg: Buffer): string | null {
  const r = new Reader(msg);
  const major = r.u8('legacy_version');
  r.u8('legacy_version');
  if (major !== 0x03) throw new Malformed('ClientHello version is not 3.x');
  r.skip(32, 'random');
  const sid = r.vec(1, 'legacy_session_id');
  if (sid.left > 32) throw new Malformed('session id longer than 32 bytes');
  const suites = r.vec(2, 'cipher_suites');
  if (suites.left < 2 || suites.left % 2 !== 0) throw new Malformed('bad cipher_suites length');
  const comp = r.vec(1, 'legacy_compression_methods');
  if (comp.left < 1) throw new Malformed('no compression methods');
  // Extensions are optional before TLS 1.3 (no extensions = no SNI).
  if (r.left === 0) return null;
  const exts = r.vec(2, 'extensions');
  if (r.left !== 0) throw new Malformed('bytes after the extensions');
  const seen = new Set<number>();
  let sni: string | null = null;
  while (exts.left > 0) {
    const type = exts.u16('extension type');
    const body = exts.vec(2, 'extension');
    if (seen.has(type)) throw new Malformed(`extension ${type} appears twice`);
    seen.add(type);
    if (type === 0) sni = parseServerName(body);
  }
  return sni;
}

/** RFC 6066 §3: one host_name, ASCII, no NUL, no empty name. */
function parseServerName(body: Reader): string | null {
  // A server_name extension with an empty body is what a server sends back; from a client it is malformed.
  const list = body.vec(2, 'server_name_list');
  if (body.left !== 0) throw new Malformed('bytes after server_name_list');
  if (list.left === 0) throw new Malformed('empty server_name_list');
  let name: string | null = null;
  while (list.left > 0) {
    const type = list.u8('name_type');
    const v = list.vec(2, 'host_name');
    if (type !== 0) throw new Malformed(`unknown server name type ${type}`);
    if (name !== null) throw new Malformed('more than one host_name');
    const b = v.bytes();
    if (b.length === 0) throw new Malformed('empty host_name');
    for (const c of b) if (c <= 0x20 || c >= 0x7f) throw new Malformed('host_name is not printable ASCII');
    name = b.toString('latin1');
  }
  return name;
}

const TCHAR = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * A request line (upper-case method, one space, target, one space, HTTP/1.x) and its header block, up to
 * the blank line, within maxHeaderBytes. Only the first request of the connection is read.
 */
function sniffHttp(buf: Buffer, maxHeaderBytes: number): Sniff {
  let i = 0;
  while (i < buf.length && i <= MAX_METHOD && buf[i] >= 0x41 && buf[i] <= 0x5a) i++;
  if (i === buf.length) return i <= MAX_METHOD ? { kind: 'more' } : { kind: 'other' };
  if (i === 0 || i > MAX_METHOD || buf[i] !== 0x20) return { kind: 'other' };
  // A complete first line that is not a request line: some other line protocol (SMTP, IRC, …).
  const nl = buf.indexOf(0x0a);
  if (nl !== -1 && !/ HTTP\/[0-9]/.test(buf.toString('latin1', 0, nl))) return { kind: 'other' };
  const end = headEnd(buf, maxHeaderBytes);
  if (end === -1) {
    return buf.length >= maxHeaderBytes
      ? { kind: 'malformed', protocol: 'http', error: `request head larger than ${maxHeaderBytes} bytes` }
      : { kind: 'more' };
  }
  const lines = buf.toString('latin1', 0, end).split(/\r?\n/);
  const m = /^([A-Z]{1,20}) (\S+) HTTP\/1\.[01]$/.exec(lines[0]);
  if (!m) return { kind: 'malformed', protocol: 'http', error: 'bad request line' };
  let host: string | null = null;
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0 || !TCHAR.test(line.slice(0, colon))) return { kind: 'malformed', protocol: 'http', error: 'bad header line' };
    if (line.slice(0, colon).toLowerCase() !== 'host') continue;
    if (host !== null) return { kind: 'malformed', protocol: 'http', error: 'more than one Host header' };
    host = line.slice(colon + 1).trim();
  }
  return { kind: 'http', method: m[1], target: m[2], host };
}

/** Offset just past the header block's blank line, or -1 when it is not within the first max bytes. */
function headEnd(buf: Buffer, max: number): number {
  const n = Math.min(buf.length, max);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== 0x0a) continue;
    if (i + 1 < n && buf[i + 1] === 0x0a) return i + 2;
    if (i + 2 < n && buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}
