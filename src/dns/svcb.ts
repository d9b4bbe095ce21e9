import ipaddr from 'ipaddr.js';

/**
 * SVCB and HTTPS RDATA (RFC 9460 §2.2), decoded strictly and re-encoded. dns-packet hands these records
 * over as raw bytes; the filter must see their addresses (ipv4hint, ipv6hint) and their TargetName before
 * an agent does. Anything this module does not fully understand is refused (null), so the caller drops the
 * record rather than pass unchecked bytes on.
 */

export const SVC_KEY = { mandatory: 0, alpn: 1, noDefaultAlpn: 2, port: 3, ipv4hint: 4, ech: 5, ipv6hint: 6, dohpath: 7 } as const;
const INVALID_KEY = 65535;
const KNOWN_KEYS = new Set<number>(Object.values(SVC_KEY));

export interface SvcParam {
  key: number;
  value: Buffer;
}

export interface SvcRecord {
  /** 0 = AliasMode, otherwise ServiceMode. */
  priority: number;
  /** TargetName as text without the trailing dot; '' is the root ("." = the owner name in ServiceMode). */
  target: string;
  /** TargetName as it was on the wire (uncompressed, RFC 9460 forbids compression), re-emitted as is. */
  targetWire: Buffer;
  /** Known keys only, in strictly increasing order. */
  params: SvcParam[];
  /** Keys this module does not know: they are removed on re-encoding (nobody vetted them). */
  unknownKeys: number[];
}

export class SvcbError extends Error {}

const fail = (why: string): never => {
  throw new SvcbError(why);
};

// A label becomes text joined by dots, so a byte that could change its meaning there ('.', '\', control,
// space, non-ASCII) is refused outright; the policy's name check judges the rest.
const LABEL_BYTE = /^[A-Za-z0-9_-]+$/;

function readName(buf: Buffer, at: number): { text: string; end: number } {
  const labels: string[] = [];
  let i = at;
  for (;;) {
    if (i >= buf.length) fail('TargetName runs past the RDATA');
    const len = buf[i];
    if (len === 0) {
      i++;
      break;
    }
    if (len > 63) fail('TargetName uses compression or an extended label type');
    if (i + 1 + len > buf.length) fail('TargetName label runs past the RDATA');
    const label = buf.toString('latin1', i + 1, i + 1 + len);
    if (!LABEL_BYTE.test(label)) fail('TargetName label has a character a host name cannot have');
    labels.push(label);
    i += 1 + len;
    if (i - at > 255) fail('TargetName longer than 255 octets');
  }
  return { text: labels.join('.'), end: i };
}

function checkValue(key: number, v: Buffer): void {
  switch (key) {
    case SVC_KEY.mandatory:
      if (v.length === 0 || v.length % 2 !== 0) fail('mandatory: bad length');
      for (let i = 0; i < v.length; i += 2) {
        const k = v.readUInt16BE(i);
        if (k === SVC_KEY.mandatory) fail('mandatory lists itself');
        if (i > 0 && k <= v.readUInt16BE(i - 2)) fail('mandatory keys not strictly increasing');
      }
      return;
    case SVC_KEY.alpn: {
      if (v.length === 0) fail('alpn: empty');
      for (let i = 0; i < v.length; ) {
        const l = v[i];
        if (l === 0 || i + 1 + l > v.length) fail('alpn: bad protocol id');
        i += 1 + l;
      }
      return;
    }
    case SVC_KEY.noDefaultAlpn:
      if (v.length !== 0) fail('no-default-alpn: has a value');
      return;
    case SVC_KEY.port:
      if (v.length !== 2) fail('port: bad length');
      return;
    case SVC_KEY.ipv4hint:
      if (v.length === 0 || v.length % 4 !== 0) fail('ipv4hint: bad length');
      return;
    case SVC_KEY.ipv6hint:
      if (v.length === 0 || v.length % 16 !== 0) fail('ipv6hint: bad length');
      return;
    case SVC_KEY.ech:
      if (v.length === 0) fail('ech: empty');
      return;
    case SVC_KEY.dohpath:
      if (!isUtf8(v)) fail('dohpath: not UTF-8');
      return;
  }
}

function isUtf8(b: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}

/** Decode SVCB/HTTPS RDATA. Throws SvcbError on anything RFC 9460 calls malformed (and on compression). */
export function decodeSvcb(rdata: Buffer): SvcRecord {
  if (rdata.length < 3) fail('RDATA too short');
  const priority = rdata.readUInt16BE(0);
  const name = readName(rdata, 2);
  const targetWire = Buffer.from(rdata.subarray(2, name.end));
  const params: SvcParam[] = [];
  const unknownKeys: number[] = [];
  let last = -1;
  let i = name.end;
  while (i < rdata.length) {
    if (i + 4 > rdata.length) fail('SvcParam header runs past the RDATA');
    const key = rdata.readUInt16BE(i);
    const len = rdata.readUInt16BE(i + 2);
    if (key <= last) fail('SvcParamKeys not strictly increasing');
    if (key === INVALID_KEY) fail('the reserved invalid key');
    if (i + 4 + len > rdata.length) fail('SvcParam value runs past the RDATA');
    const value = Buffer.from(rdata.subarray(i + 4, i + 4 + len));
    last = key;
    i += 4 + len;
    if (!KNOWN_KEYS.has(key)) {
      unknownKeys.push(key);
      continue;
    }
    checkValue(key, value);
    params.push({ key, value });
  }
  const present = new Set([...params.map((p) => p.key), ...unknownKeys]);
  const mandatory = params.find((p) => p.key === SVC_KEY.mandatory);
  if (mandatory) {
    for (let j = 0; j < mandatory.value.length; j += 2) {
      if (!present.has(mandatory.value.readUInt16BE(j))) fail('a mandatory key is missing');
    }
  }
  if (present.has(SVC_KEY.noDefaultAlpn) && !present.has(SVC_KEY.alpn)) fail('no-default-alpn without alpn');
  return { priority, target: name.text, targetWire, params, unknownKeys };
}

/** Keys the record requires a client to understand (the mandatory list), unknown ones included. */
export function mandatoryKeys(r: SvcRecord): number[] {
  const m = r.params.find((p) => p.key === SVC_KEY.mandatory);
  const out: number[] = [];
  if (m) for (let j = 0; j < m.value.length; j += 2) out.push(m.value.readUInt16BE(j));
  return out;
}

/** Encode RDATA. AliasMode records carry no SvcParams (RFC 9460 §2.4.2: recipients ignore them). */
export function encodeSvcb(r: SvcRecord): Buffer {
  const params = r.priority === 0 ? [] : [...r.params].sort((a, b) => a.key - b.key);
  const parts: Buffer[] = [Buffer.from([r.priority >> 8, r.priority & 0xff]), r.targetWire];
  for (const p of params) {
    const h = Buffer.alloc(4);
    h.writeUInt16BE(p.key, 0);
    h.writeUInt16BE(p.value.length, 2);
    parts.push(h, p.value);
  }
  return Buffer.concat(parts);
}

/**
 * Split an ipv4hint/ipv6hint value by `accept` (given canonical address text): the value of the accepted
 * addresses, in order (empty when none), and the refused ones.
 */
export function filterHint(key: number, v: Buffer, accept: (address: string) => boolean): { value: Buffer; refused: string[] } {
  const size = key === SVC_KEY.ipv4hint ? 4 : 16;
  const keep: Buffer[] = [];
  const refused: string[] = [];
  for (let i = 0; i < v.length; i += size) {
    const chunk = v.subarray(i, i + size);
    const ip = ipaddr.fromByteArray([...chunk]);
    const text = size === 4 ? ip.toString() : (ip as ipaddr.IPv6).toRFC5952String();
    if (accept(text)) keep.push(chunk);
    else refused.push(text);
  }
  return { value: Buffer.concat(keep), refused };
}
