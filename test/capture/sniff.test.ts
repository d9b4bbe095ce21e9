import { beforeAll, describe, expect, it } from 'vitest';
import { MAX_CLIENT_HELLO, sniff, type Sniff } from '../../src/capture/sniff.js';
import { captureClientHello, handshakeOf, record, reframe, sniExtension, syntheticHello } from './hello.js';

const opts = { maxHeaderBytes: 1024 };
const ascii = (s: string) => Buffer.from(s, 'latin1');
const ext = (type: number, body: Buffer) => Buffer.concat([Buffer.from([type >> 8, type & 0xff, body.length >> 8, body.length & 0xff]), body]);

let nodeHello: Buffer;
let opensslHello: Buffer;
let noSni: Buffer;

beforeAll(async () => {
  [nodeHello, opensslHello, noSni] = await Promise.all([
    captureClientHello('node', 'allowed.test'),
    captureClientHello('openssl', 'Allowed.Test'),
    captureClientHello('openssl', null),
  ]);
});

describe('sniff: real ClientHellos', () => {
  it('reads the SNI of node:tls and openssl hellos, and none when openssl sends none', () => {
    expect(sniff(nodeHello, opts)).toEqual({ kind: 'tls', sni: 'allowed.test' });
    // As sent: normalisation is the judge's job.
    expect(sniff(opensslHello, opts)).toEqual({ kind: 'tls', sni: 'Allowed.Test' });
    expect(sniff(noSni, opts)).toEqual({ kind: 'tls', sni: null });
  });

  it('answers "more" for every proper prefix of a hello', () => {
    let n = 0;
    for (let i = 0; i < nodeHello.length; i++) {
      expect(sniff(nodeHello.subarray(0, i), opts).kind).toBe('more');
      n++;
    }
    expect(n).toBe(nodeHello.length);
  });

  it('reassembles a hello split over several records, and over several records cut mid-header', () => {
    const split = reframe(nodeHello, [2, 1, 100]);
    expect(split.length).toBeGreaterThan(nodeHello.length);
    expect(sniff(split, opts)).toEqual({ kind: 'tls', sni: 'allowed.test' });
    const many = reframe(opensslHello, Array(40).fill(7));
    expect(sniff(many, opts)).toEqual({ kind: 'tls', sni: 'Allowed.Test' });
    for (let i = 0; i < split.length; i++) expect(sniff(split.subarray(0, i), opts).kind).toBe('more');
  });

  it('ignores bytes after the hello (early data, the next record)', () => {
    expect(sniff(Buffer.concat([nodeHello, record(Buffer.alloc(30), 0x17)]), opts)).toEqual({ kind: 'tls', sni: 'allowed.test' });
  });
});

const malformed = (error: RegExp): Partial<Sniff> => ({ kind: 'malformed', protocol: 'tls', error: expect.stringMatching(error) as unknown as string });

describe('sniff: ClientHello fixture table', () => {
  const sni = (name: string) => sniExtension([[0, ascii(name)]]);
  const cases: [string, () => Buffer, Partial<Sniff>][] = [
    ['synthetic hello with SNI', () => syntheticHello([sni('a.example')]), { kind: 'tls', sni: 'a.example' }],
    ['no extensions block at all', () => syntheticHello(null), { kind: 'tls', sni: null }],
    ['extensions without SNI', () => syntheticHello([ext(10, Buffer.from([0, 2, 0, 29]))]), { kind: 'tls', sni: null }],
    ['two host_names', () => syntheticHello([sniExtension([[0, ascii('a.example')], [0, ascii('b.example')]])]), malformed(/more than one host_name/)],
    ['unknown name type', () => syntheticHello([sniExtension([[1, ascii('a.example')]])]), malformed(/unknown server name type/)],
    ['empty host_name', () => syntheticHello([sniExtension([[0, Buffer.alloc(0)]])]), malformed(/empty host_name/)],
    ['empty server_name_list', () => syntheticHello([ext(0, Buffer.from([0, 0]))]), malformed(/empty server_name_list/)],
    ['empty server_name extension', () => syntheticHello([ext(0, Buffer.alloc(0))]), malformed(/truncated/)],
    ['NUL in host_name', () => syntheticHello([sni('a\u0000.example')]), malformed(/printable ASCII/)],
    ['non-ASCII host_name', () => syntheticHello([sniExtension([[0, Buffer.from('bücher.example', 'utf8')]])]), malformed(/printable ASCII/)],
    ['SNI extension twice', () => syntheticHello([sni('a.example'), sni('b.example')]), malformed(/appears twice/)],
    ['extension overruns the block', () => syntheticHello([Buffer.from([0, 10, 0, 50, 1, 2])]), malformed(/overruns/)],
    ['bytes after the extensions', () => syntheticHello([sni('a.example')], { trailing: Buffer.from([1]) }), malformed(/overruns|after/)],
    ['session id of 33 bytes', () => syntheticHello([], { sessionId: Buffer.alloc(33) }), malformed(/session id/)],
    ['odd cipher_suites length', () => syntheticHello([], { suites: Buffer.from([1, 2, 3]) }), malformed(/cipher_suites/)],
    ['no compression methods', () => syntheticHello([], { compression: Buffer.alloc(0) }), malformed(/compression/)],
    ['handshake type ServerHello', () => record(Buffer.from([2, 0, 0, 1, 0])), malformed(/not ClientHello/)],
    ['zero-length record', () => Buffer.from([0x16, 3, 1, 0, 0]), malformed(/record length 0/)],
    ['record over 2^14', () => Buffer.from([0x16, 3, 1, 0x40, 0x01]), malformed(/record length/)],
    ['record version 3.9', () => Buffer.from([0x16, 3, 9, 0, 5]), malformed(/record version/)],
    ['hello larger than the bound', () => record(Buffer.from([1, (MAX_CLIENT_HELLO + 1) >> 16, ((MAX_CLIENT_HELLO + 1) >> 8) & 0xff, (MAX_CLIENT_HELLO + 1) & 0xff])), malformed(/exceeds/)],
    ['alert record before the hello is complete', () => Buffer.concat([record(Buffer.from([1, 0, 1, 0])), record(Buffer.from([2, 40]), 0x15)]), malformed(/record type 21/)],
    ['hello version 2.x', () => { const b = syntheticHello([]); b[9] = 2; return b; }, malformed(/version is not 3/)],
    ['0x16 followed by a non-TLS byte', () => Buffer.from([0x16, 0x41, 0x42]), { kind: 'other' }],
  ];
  it.each(cases)('%s', (_name, make, want) => {
    expect(sniff(make(), opts)).toMatchObject(want);
  });

  it('refuses a hello split over more than 64 records', () => {
    const hs = handshakeOf(syntheticHello([sni('a.example')]));
    expect(hs.length).toBeGreaterThan(65);
    const frames = Buffer.concat([...hs].map((b) => record(Buffer.from([b]))));
    expect(sniff(frames, opts)).toMatchObject(malformed(/more than 64 records/));
  });
});

describe('sniff: HTTP, SSH and the rest', () => {
  const cases: [string, string, Partial<Sniff>][] = [
    ['origin-form request', 'GET /x HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n', { kind: 'http', method: 'GET', target: '/x', host: 'a.example' }],
    ['LF-only lines', 'POST / HTTP/1.0\nHost: a.example:8080\n\n', { kind: 'http', method: 'POST', host: 'a.example:8080' }],
    ['absolute-form target', 'GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n', { kind: 'http', target: 'http://b.example/', host: 'a.example' }],
    ['no Host', 'GET / HTTP/1.0\r\n\r\n', { kind: 'http', host: null }],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n', { kind: 'malformed', protocol: 'http' }],
    ['double space in request line', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', { kind: 'malformed', protocol: 'http' }],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', { kind: 'malformed', protocol: 'http' }],
    ['header without colon', 'GET / HTTP/1.1\r\nHost a\r\n\r\n', { kind: 'malformed', protocol: 'http' }],
    ['head not finished yet', 'GET / HTTP/1.1\r\nHost: a\r\n', { kind: 'more' }],
    ['method prefix', 'OPTIO', { kind: 'more' }],
    ['lower-case method', 'get / HTTP/1.1\r\n\r\n', { kind: 'other' }],
    ['SSH banner', 'SSH-2.0-OpenSSH_9.2\r\n', { kind: 'ssh' }],
    ['SSH prefix', 'SSH', { kind: 'more' }],
    ['binary', '\u0000\u0001\u0002', { kind: 'other' }],
    ['SMTP-ish greeting from a client', 'EHLO x\r\n', { kind: 'other' }],
    ['over-long method', 'A'.repeat(25), { kind: 'other' }],
  ];
  it.each(cases)('%s', (_name, text, want) => {
    expect(sniff(ascii(text), opts)).toMatchObject(want);
  });

  it('refuses a head that does not end within max-header-bytes', () => {
    const big = ascii('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(2000));
    expect(sniff(big, opts)).toMatchObject({ kind: 'malformed', protocol: 'http', error: expect.stringMatching(/larger than 1024/) });
  });
});

describe('sniff: fuzzed hellos never throw', () => {
  it('mutations of real hellos give an answer, never an exception', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const kinds = new Set<string>();
    let runs = 0;
    for (const base of [nodeHello, opensslHello, noSni, reframe(nodeHello, [50, 50])]) {
      for (let i = 0; i < 1500; i++) {
        const b = Buffer.from(base);
        const edits = 1 + rand(4);
        for (let e = 0; e < edits; e++) b[rand(b.length)] = rand(256);
        const cut = rand(3) === 0 ? b.subarray(0, rand(b.length)) : b;
        const s = sniff(cut, opts);
        kinds.add(s.kind);
        runs++;
      }
    }
    expect(runs).toBe(6000);
    // The mutations reach the strict checks, not only the happy path.
    expect(kinds).toContain('malformed');
    expect(kinds).toContain('tls');
  });
});
