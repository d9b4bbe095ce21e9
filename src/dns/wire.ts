import * as packet from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Question } from 'dns-packet';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;

const QR = 0x8000;
const HEADER = 12;
/** What we advertise to clients and the most we ever send over UDP. */
export const OUR_EDNS_SIZE = 1232;
const MAX_UDP = 4096;

// dns-packet has no names for these two; the policy and the records use the IANA names.
const TYPE_ALIASES: Record<string, string> = { UNKNOWN_64: 'SVCB', UNKNOWN_65: 'HTTPS' };

/** The IANA mnemonic of a query type as dns-packet decoded it (e.g. UNKNOWN_65 -> HTTPS). */
export function typeName(decoded: string): string {
  return TYPE_ALIASES[decoded] ?? decoded;
}

/**
 * A FORMERR answer built from the 12-byte header alone, for packets dns-packet cannot decode.
 * Returns null when even the header is missing or the packet is itself a response (answering those
 * would let two resolvers bounce packets at each other forever).
 */
export function formErrFromHeader(buf: Buffer): Buffer | null {
  if (buf.length < HEADER) return null;
  const flags = buf.readUInt16BE(2);
  if (flags & QR) return null;
  const out = Buffer.alloc(HEADER);
  out.writeUInt16BE(buf.readUInt16BE(0), 0);
  // Keep opcode and RD, set QR, rcode FORMERR, all counts zero.
  out.writeUInt16BE(QR | (flags & 0x7900) | RCODE.FORMERR, 2);
  return out;
}

export function isResponse(buf: Buffer): boolean {
  return buf.length >= 3 && (buf[2] & 0x80) !== 0;
}

export function opcodeOf(buf: Buffer): number {
  return (buf[2] >> 3) & 0x0f;
}

/** The client's EDNS record, if it sent one. */
export function clientOpt(q: DecodedPacket): OptAnswer | null {
  for (const a of q.additionals ?? []) if (a.type === 'OPT') return a as OptAnswer;
  return null;
}

/** Largest UDP response the client accepts: 512 without EDNS, its advertised size (bounded) with. */
export function clientUdpSize(q: DecodedPacket): number {
  const opt = clientOpt(q);
  if (!opt) return 512;
  return Math.max(512, Math.min(MAX_UDP, opt.udpPayloadSize || 512));
}

export interface ResponseParts {
  /** Full rcode: values above 15 (BADVERS = 16) go partly into the OPT record, as EDNS requires. */
  rcode: number;
  answers?: Answer[];
  authorities?: Answer[];
}

/**
 * Encode our response to a query: same id and question, RD/CD echoed, RA set, never AA or AD (we
 * rewrite answers, so we vouch for nothing), OPT only if the client spoke EDNS. Over UDP, an answer
 * larger than the client accepts is replaced by an empty one with TC set, telling it to retry on TCP.
 */
export function encodeResponse(q: DecodedPacket, parts: ResponseParts, maxSize: number | null): Buffer {
  const questions: Question[] = (q.questions ?? []).slice(0, 1);
  const flags =
    (q.flags ?? 0) & (packet.RECURSION_DESIRED | packet.CHECKING_DISABLED) | packet.RECURSION_AVAILABLE | (parts.rcode & 0x0f);
  const additionals: Answer[] = clientOpt(q)
    ? [{ type: 'OPT', name: '.', udpPayloadSize: OUR_EDNS_SIZE, extendedRcode: parts.rcode >> 4, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
    : [];
  const full: packet.Packet = {
    type: 'response',
    id: q.id,
    flags,
    questions,
    answers: parts.answers ?? [],
    authorities: parts.authorities ?? [],
    additionals,
  };
  const buf = packet.encode(full);
  if (maxSize === null || buf.length <= maxSize) return buf;
  return packet.encode({ ...full, flags: flags | packet.TRUNCATED_RESPONSE, answers: [], authorities: [] });
}
