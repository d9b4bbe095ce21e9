import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHead } from '../../src/proxy/conformance.js';
import { MAX_HEADER_FIELDS, parseConnectHead, ConnectHeadParser } from '../../src/proxy/connect-head.js';

const MAX = 16 * 1024;

/** What llhttp (node:http, strict parser) made of a head, through a real socket. */
type Llhttp =
  | { kind: 'connect'; url: string; httpVersion: string; rawHeaders: string[]; headers: Record<string, unknown>; head: string }
  | { kind: 'error'; code: string }
  | { kind: 'request' }
  | { kind: 'incomplete' };

let server: Server;
let port: number;
const seen = new Map<number, Llhttp>();

beforeAll(async () => {
  server = createServer({ insecureHTTPParser: false, maxHeaderSize: MAX, requireHostHeader: false });
  server.on('connect', (req, socket, head: Buffer) => {
    seen.set(socket.remotePort!, { kind: 'connect', url: req.url!, httpVersion: req.httpVersion, rawHeaders: req.rawHeaders, headers: { ...req.headers }, head: head.toString('latin1') });
    socket.destroy();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    seen.set(socket.remotePort!, { kind: 'error', code: err.code ?? '?' });
    socket.destroy();
  });
  server.on('request', (req, res) => {
    seen.set(req.socket.remotePort!, { kind: 'request' });
    res.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

function llhttp(data: Buffer): Promise<Llhttp> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let local = 0;
    const timer = setTimeout(() => s.destroy(), 2_000);
    s.on('connect', () => {
      local = s.localPort!;
      // The end right after the head: llhttp then says at once whether the head was complete (an
      // incomplete one ends in HPE_INVALID_EOF_STATE).
      s.end(data);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      // The server side records before it destroys the socket; give its event a turn to land.
      setImmediate(() => {
        const got = seen.get(local);
        resolve(!got || (got.kind === 'error' && got.code === 'HPE_INVALID_EOF_STATE') ? { kind: 'incomplete' } : got);
      });
    });
  });
}

// A small deterministic PRNG, so a failure reproduces from its case number.
function prng(seed: number) {
  return (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
}

const TARGETS = ['example.com:443', 'a.test:8080', '127.0.0.1:22', '[::1]:443', '[2001:db8::1]:1', 'x:0', 'user:pw@h:1', 'h:1/p', 'h:1?q', 'h', ':443', 'h:443e1', 'xn--bcher-kva.example:443', 'a_b.test:1', '%41.test:1'];
const NAMES = ['Host', 'host', 'HOST', 'Proxy-Authorization', 'proxy-authorization', 'User-Agent', 'Accept', 'accept', 'X-Custom', 'x-custom', 'Cookie', 'Set-Cookie', 'Proxy-Connection', 'Connection', 'Content-Type', 'X-A.B~C', 'constructor', '__proto__', 'Via'];
const VALUES = ['example.com:443', 'Basic YTpi', 'curl/8.5.0', 'application/json', '', 'a  b', 'keep-alive', '\u00e9\u00ff', '"quoted"', 'x=1; y=2', 'v\tw'];
/** Bytes a mutation drops in: the classes llhttp and RFC 9112 care about. */
const BYTES = [0, 1, 8, 9, 10, 11, 12, 13, 27, 32, 34, 40, 44, 47, 58, 59, 61, 63, 64, 35, 91, 92, 93, 123, 127, 128, 160, 255, 0x41, 0x7a];

function validHead(r: (n: number) => number): string {
  const target = TARGETS[r(TARGETS.length)];
  const version = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'][r(4)];
  let s = `CONNECT ${target} ${version}\r\n`;
  const n = r(7);
  for (let i = 0; i < n; i++) s += `${NAMES[r(NAMES.length)]}:${[' ', '', '  ', '\t'][r(4)]}${VALUES[r(VALUES.length)]}${['', ' ', '\t'][r(3)]}\r\n`;
  return s + '\r\n';
}

const FIELDS: string[] = [
  'Content-Length: 0', 'Content-Length: 5', 'Content-Length: 00', 'Content-Length: ', 'Content-Length: x', 'Content-Length: 1, 1', 'Content-Length: +0',
  'Content-Length: 99999999999999999999999', 'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip', 'Transfer-Encoding: chunked, gzip',
  'Host : a', ' Host: a', 'Host:\x00a', 'X-\u00ff: a', ': a', 'NoColon', 'X: a\rb', 'X\t: a',
];

/** One mutation of a head: each is a way a real parser has been fooled before. */
function mutate(r: (n: number) => number, s: string): string {
  const at = r(s.length + 1);
  switch (r(16)) {
    case 0:
      return s.slice(0, at) + String.fromCharCode(BYTES[r(BYTES.length)]) + s.slice(at + 1);
    case 1:
      return s.slice(0, at) + String.fromCharCode(BYTES[r(BYTES.length)]) + s.slice(at);
    case 2:
      return s.slice(0, at) + s.slice(at + 1);
    case 3:
      return s.replace(' ', ['  ', '\t', ' \t', ''][r(4)]);
    case 4: {
      // One line end (CRLF) made a bare LF or a bare CR.
      const ends = [...s.matchAll(/\r\n/g)].map((m) => m.index!);
      const i = ends[r(ends.length)];
      return s.slice(0, i) + ['\n', '\r', '\r\r\n', '\n\r'][r(4)] + s.slice(i + 2);
    }
    case 5:
      // obs-fold: a continuation line.
      return s.replace('\r\n', `\r\nX-Fold: a\r\n${[' ', '\t'][r(2)]}b\r\n`);
    case 6:
      return s.replace(/HTTP\/\d\.\d/, ['HTTP/2.0', 'HTTP/0.9', 'HTTP/1.2', 'HTTP/3.0', 'HTTP/1.', 'HTTP/11', 'http/1.1', 'HTTP/1.1 ', '', 'HTTP/9.9', 'HTTP/0.0'][r(11)]);
    case 7:
      return s.replace('CONNECT', ['connect', 'CONNECTX', 'GET', 'CONNEC', ' CONNECT', 'CONNECT\x00'][r(6)]);
    case 8:
      return s.replace('\r\n', `\r\n${FIELDS[r(FIELDS.length)]}\r\n`);
    case 9:
      // Near and past the size limit.
      return s.replace('\r\n', `\r\nX-Big: ${'a'.repeat(MAX - 200 + r(400))}\r\n`);
    case 10:
      return s.replace('\r\n', `\r\n${'X: y\r\n'.repeat([10, 900, MAX_HEADER_FIELDS + 1][r(3)])}`);
    case 11:
      return ['\r\n', '\n', '\r\n\r\n', '\r', ' '][r(5)] + s;
    case 12:
      // Pipelined bytes after the head.
      return s + ['GET / HTTP/1.1\r\n\r\n', '\x16\x03\x01', 'x'][r(3)];
    case 13:
      return s.replace(/\r\n\r\n$/, ['\r\n', '', '\r\n\n', '\n\n'][r(4)]);
    case 14: {
      // A duplicated field line.
      const lines = s.split('\r\n');
      const i = 1 + r(Math.max(1, lines.length - 2));
      lines.splice(i, 0, lines[i] || 'Host: b');
      return lines.join('\r\n');
    }
    default:
      return s.replace(/CONNECT \S+/, `CONNECT ${['h\u00ff:1', 'h\x7f:1', 'h#x:1', 'h"x:1', 'h{x:1', 'h:1/\u00ff', 'h:1?\u00e9', '[v1.x]:1', 'a@b@c:1', 'h\\:1'][r(10)]}`);
  }
}

const CASES = 3000;

/** The stricter-than-llhttp refusals the parser documents (connect-head.ts). */
const STRICTER = new Set(['request_line', 'connect_content', 'too_many_fields', 'HPE_HEADER_OVERFLOW', 'HPE_INVALID_URL']);

describe('the CONNECT head parser against llhttp (real node:http server, strict parser)', () => {
  it('rejects every head llhttp rejects, and parses what both accept the same way (seeded fuzz)', async () => {
    const r = prng(0x5eed1234);
    const tally = { cases: 0, bothReject: 0, bothAccept: 0, onlyOursRejects: 0, llhttpIncomplete: 0, llhttpOtherMethod: 0 };
    const oursStricter: Record<string, number> = {};
    let prefixesChecked = 0;
    for (let i = 0; i < CASES; i++) {
      let s = validHead(r);
      const m = r(4);
      for (let j = 0; j < m; j++) s = mutate(r, s);
      const data = Buffer.from(s, 'latin1');
      const ours = parseConnectHead(data, MAX);
      const theirs = await llhttp(data);
      const label = `case ${i}: ${JSON.stringify(s.length > 300 ? s.slice(0, 300) + '…' : s)}`;
      tally.cases++;
      if (theirs.kind === 'error') {
        tally.bothReject++;
        expect(ours && 'error' in ours, `${label}: llhttp ${theirs.code}, ours ${JSON.stringify(ours && ('error' in ours ? ours.error : ours.head))}`).toBe(true);
      } else if (theirs.kind === 'request') {
        tally.llhttpOtherMethod++;
        // Not a CONNECT: the listener hands it to the HTTP server, and the parser refuses it.
        expect(ours && 'error' in ours, label).toBe(true);
      } else if (theirs.kind === 'incomplete') {
        tally.llhttpIncomplete++;
        // Both still waiting, or ours already refused what it cannot become (never accepted).
        expect(ours === null || 'error' in ours, label).toBe(true);
      } else if (ours && 'head' in ours) {
        tally.bothAccept++;
        expect({ url: ours.head.url, v: ours.head.httpVersion, raw: ours.head.rawHeaders, h: { ...ours.head.headers }, rest: data.subarray(ours.end).toString('latin1') }, label).toEqual({
          url: theirs.url,
          v: theirs.httpVersion,
          raw: theirs.rawHeaders,
          h: theirs.headers,
          rest: theirs.head,
        });
        // Every prefix of a head both take is "more, please", never an error: the check of the unfinished
        // line (precheck) must not refuse what would have parsed. And a byte at a time ends the same.
        if (data.length < 600) {
          const p = new ConnectHeadParser(MAX);
          for (let k = 1; k < ours.end; k++) {
            expect(parseConnectHead(data.subarray(0, k), MAX), `${label}: prefix of ${k} bytes`).toBeNull();
            expect(p.feed(data.subarray(0, k)), `${label}: fed up to ${k} bytes`).toBeNull();
          }
          const last = p.feed(data.subarray(0, ours.end));
          expect(last && 'head' in last && last.head.rawHeaders, label).toEqual(ours.head.rawHeaders);
          prefixesChecked++;
        }
      } else {
        tally.onlyOursRejects++;
        expect(ours, `${label}: llhttp accepted, ours incomplete`).not.toBeNull();
        const code = (ours as { error: { code: string } }).error.code;
        oursStricter[code] = (oursStricter[code] ?? 0) + 1;
        expect(STRICTER.has(code), `${label}: refused with ${code} where llhttp accepts`).toBe(true);
      }
    }
    console.log('connect-head fuzz vs llhttp:', JSON.stringify(tally), 'ours stricter by code:', JSON.stringify(oursStricter), 'heads checked prefix by prefix:', prefixesChecked);
    expect(tally.cases).toBe(CASES);
    expect(prefixesChecked).toBeGreaterThan(200);
    // The fuzz has to exercise both sides of the line, or it proves nothing.
    expect(tally.bothReject).toBeGreaterThan(300);
    expect(tally.bothAccept).toBeGreaterThan(300);
  }, 120_000);
});

describe('the CONNECT head parser', () => {
  const parse = (s: string) => parseConnectHead(Buffer.from(s, 'latin1'), MAX);
  const err = (s: string) => {
    const out = parse(s);
    return out && 'error' in out ? out.error : null;
  };

  it('parses a head like node:http: url, version, raw and joined headers, and where the head ends', () => {
    const out = parse('CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nAccept: x\r\naccept: y\r\nCookie: a\r\ncookie: b\r\nUser-Agent: u\r\nuser-agent: v\r\n\r\n\x16\x03');
    expect(out && 'head' in out).toBe(true);
    const { head, end } = out as Extract<typeof out, { head: unknown }>;
    expect(head).toMatchObject({ method: 'CONNECT', url: 'a.test:443', httpVersion: '1.1', httpVersionMajor: 1, httpVersionMinor: 1 });
    expect(head.rawHeaders).toEqual(['Host', 'a.test:443', 'Accept', 'x', 'accept', 'y', 'Cookie', 'a', 'cookie', 'b', 'User-Agent', 'u', 'user-agent', 'v']);
    expect({ ...head.headers }).toEqual({ host: 'a.test:443', accept: 'x, y', cookie: 'a; b', 'user-agent': 'u' });
    expect(end).toBe(Buffer.byteLength('CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nAccept: x\r\naccept: y\r\nCookie: a\r\ncookie: b\r\nUser-Agent: u\r\nuser-agent: v\r\n\r\n'));
  });

  it('keeps a duplicate Proxy-Authorization visible to checkHead (in rawHeaders), which refuses it', () => {
    const out = parse('CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nProxy-Authorization: Basic YTpi\r\nproxy-authorization: Basic Yzpk\r\n\r\n');
    const head = (out as { head: Parameters<typeof checkHead>[0] & { headers: Record<string, unknown> } }).head;
    expect(head.headers['proxy-authorization']).toBe('Basic YTpi');
    expect(checkHead(head)).toEqual({ status: 400, message: 'more than one Proxy-Authorization header' });
  });

  it.each([
    ['bare LF after the request line', 'CONNECT a:1 HTTP/1.1\nHost: a\r\n\r\n', 'HPE_INVALID_VERSION'],
    ['bare LF after a field', 'CONNECT a:1 HTTP/1.1\r\nHost: a\n\r\n', 'HPE_CR_EXPECTED'],
    ['bare CR in a field', 'CONNECT a:1 HTTP/1.1\r\nHost: a\rX: b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['obs-fold', 'CONNECT a:1 HTTP/1.1\r\nX: a\r\n b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['space before the colon', 'CONNECT a:1 HTTP/1.1\r\nHost : a\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['NUL in a value', 'CONNECT a:1 HTTP/1.1\r\nX: a\x00b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['DEL in a value', 'CONNECT a:1 HTTP/1.1\r\nX: a\x7fb\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['a high byte in a name', 'CONNECT a:1 HTTP/1.1\r\nX\xff: a\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['two spaces', 'CONNECT  a:1 HTTP/1.1\r\n\r\n', 'request_line'],
    ['no version', 'CONNECT a:1\r\n\r\n', 'request_line'],
    ['HTTP/1.2', 'CONNECT a:1 HTTP/1.2\r\n\r\n', 'HPE_INVALID_VERSION'],
    ['a high byte in the target', 'CONNECT a\xff:1 HTTP/1.1\r\n\r\n', 'HPE_INVALID_URL'],
    ['a fragment in the authority', 'CONNECT a:1#x HTTP/1.1\r\n\r\n', 'HPE_INVALID_URL'],
    ['another method', 'GET a:1 HTTP/1.1\r\n\r\n', 'HPE_INVALID_METHOD'],
    ['two Content-Lengths', 'CONNECT a:1 HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['a non-digit Content-Length', 'CONNECT a:1 HTTP/1.1\r\nContent-Length: 0x0\r\n\r\n', 'HPE_INVALID_CONTENT_LENGTH'],
    ['content on a CONNECT', 'CONNECT a:1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello', 'connect_content'],
    ['Transfer-Encoding on a CONNECT', 'CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n', 'connect_content'],
  ])('refuses %s', (_label, s, code) => {
    expect(err(s)).toMatchObject({ status: 400, code });
  });

  it('refuses a head over the size limit with 431, whether or not it is complete', () => {
    expect(err(`CONNECT a:1 HTTP/1.1\r\nX: ${'a'.repeat(MAX)}\r\n\r\n`)).toMatchObject({ status: 431, code: 'HPE_HEADER_OVERFLOW' });
    expect(err(`CONNECT a:1 HTTP/1.1\r\nX: ${'a'.repeat(MAX)}`)).toMatchObject({ status: 431 });
    expect(err(`CONNECT a:1 HTTP/1.1\r\n${'X: y\r\n'.repeat(MAX_HEADER_FIELDS + 1)}\r\n`)).toMatchObject({ status: 431, code: 'too_many_fields' });
    expect(parse(`CONNECT a:1 HTTP/1.1\r\n${'X: y\r\n'.repeat(MAX_HEADER_FIELDS)}\r\n`)).toHaveProperty('head');
  });

  it('takes a head in any number of pieces', () => {
    const s = Buffer.from('\r\nCONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nX: 1\r\n\r\nrest', 'latin1');
    const p = new ConnectHeadParser(MAX);
    let out = null;
    let i = 1;
    for (; i <= s.length && out === null; i++) out = p.feed(s.subarray(0, i));
    expect(out && 'head' in out && out.head.rawHeaders).toEqual(['Host', 'a.test:443', 'X', '1']);
    // Complete exactly at the empty line: the pipelined bytes are not needed to finish the head.
    expect(i - 1).toBe(s.length - 'rest'.length);
  });

  it.each([
    ['a control byte in a field value', 'CONNECT a:1 HTTP/1.1\r\nX: a\x01', 'HPE_INVALID_HEADER_TOKEN'],
    ['obs-fold', 'CONNECT a:1 HTTP/1.1\r\nX: a\r\n b', 'HPE_INVALID_HEADER_TOKEN'],
    ['a CR not followed by LF', 'CONNECT a:1 HTTP/1.1\r\nX: a\rb', 'HPE_LF_EXPECTED'],
    ['a high byte in the target', 'CONNECT a\xff', 'HPE_INVALID_URL'],
    ['two spaces in the request line', 'CONNECT a:1  ', 'request_line'],
    ['a bad version', 'CONNECT a:1 HTTP/x', 'HPE_INVALID_VERSION'],
  ])('refuses %s before its line ends (as llhttp does), not at the head deadline', (_label, s, code) => {
    expect(err(s)).toMatchObject({ status: 400, code });
  });

  it('skips empty lines before the request line, as RFC 9112 §2.2 allows and node:http does', () => {
    expect(parse('\r\n\nCONNECT a:1 HTTP/1.1\r\n\r\n')).toHaveProperty('head.url', 'a:1');
  });
});
