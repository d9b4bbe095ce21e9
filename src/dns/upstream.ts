import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';
import type { DecodedPacket, Question } from 'dns-packet';
import type { Endpoint } from './endpoint.js';

/** Every upstream failed or timed out; the client gets SERVFAIL. */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    message: string,
    readonly timedOut: boolean,
  ) {
    super(message);
  }
}

/** Our advertised EDNS buffer to upstreams: the DNS flag day 2020 value, safe from fragmentation. */
const EDNS_SIZE = 1232;
const MAX_TCP_MESSAGE = 65535;

export interface UpstreamOptions {
  servers: Endpoint[];
  timeoutMs: number;
}

/**
 * Asks the upstream resolvers one question. The query is built afresh from the already-vetted
 * question (never the client's bytes), with a fresh random id and a fresh socket (random source
 * port), so nothing the client smuggled into the packet reaches the upstream, and a response must
 * match the id, the server address and the question to be believed. UDP first; TCP when truncated.
 */
export class Upstream {
  constructor(private readonly opts: UpstreamOptions) {
    if (opts.servers.length === 0) throw new UpstreamError('no upstream DNS servers', false);
  }

  async query(q: Required<Question>, checkingDisabled: boolean): Promise<DecodedPacket> {
    let lastErr: UpstreamError = new UpstreamError('no upstream answered', true);
    for (const server of this.opts.servers) {
      try {
        const res = await this.udp(server, q, checkingDisabled);
        if (!res.flag_tc) return res;
        return await this.tcp(server, q, checkingDisabled);
      } catch (e) {
        lastErr = e instanceof UpstreamError ? e : new UpstreamError(String((e as Error)?.message ?? e), false);
      }
    }
    throw lastErr;
  }

  private build(q: Required<Question>, id: number, cd: boolean): Buffer {
    return packet.encode({
      type: 'query',
      id,
      flags: packet.RECURSION_DESIRED | (cd ? packet.CHECKING_DISABLED : 0),
      questions: [q],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_SIZE, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
    });
  }

  private udp(server: Endpoint, q: Required<Question>, cd: boolean): Promise<DecodedPacket> {
    const id = randomInt(0, 65536);
    const msg = this.build(q, id, cd);
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(server.family === 6 ? 'udp6' : 'udp4');
      let done = false;
      const finish = (err: UpstreamError | null, res?: DecodedPacket): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          sock.close();
        } catch {
          // already closed
        }
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(
        () => finish(new UpstreamError(`upstream ${server.host}:${server.port} timed out`, true)),
        this.opts.timeoutMs,
      );
      sock.on('error', (e) => finish(new UpstreamError(`upstream ${server.host}:${server.port}: ${e.message}`, false)));
      sock.on('message', (buf, rinfo) => {
        // Off-path spoofing needs to guess port and id; we also insist on the server's address.
        if (rinfo.port !== server.port || rinfo.address !== server.host) return;
        const res = decodeMatching(buf, id, q);
        if (res) finish(null, res);
      });
      sock.send(msg, server.port, server.host, (e) => {
        if (e) finish(new UpstreamError(`upstream ${server.host}:${server.port}: ${e.message}`, false));
      });
    });
  }

  private tcp(server: Endpoint, q: Required<Question>, cd: boolean): Promise<DecodedPacket> {
    const id = randomInt(0, 65536);
    const msg = this.build(q, id, cd);
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: server.host, port: server.port });
      let buf = Buffer.alloc(0);
      let done = false;
      const finish = (err: UpstreamError | null, res?: DecodedPacket): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(
        () => finish(new UpstreamError(`upstream ${server.host}:${server.port} (TCP) timed out`, true)),
        this.opts.timeoutMs,
      );
      sock.on('error', (e) => finish(new UpstreamError(`upstream ${server.host}:${server.port} (TCP): ${e.message}`, false)));
      sock.on('close', () => finish(new UpstreamError(`upstream ${server.host}:${server.port} (TCP) closed early`, false)));
      sock.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(msg.length);
        sock.write(Buffer.concat([len, msg]));
      });
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length > MAX_TCP_MESSAGE + 2) return finish(new UpstreamError('upstream TCP message too long', false));
        if (buf.length < 2) return;
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) return;
        const res = decodeMatching(buf.subarray(2, len + 2), id, q);
        if (res) finish(null, res);
        else finish(new UpstreamError('upstream TCP answer did not match the question', false));
      });
    });
  }
}

function decodeMatching(buf: Buffer, id: number, q: Required<Question>): DecodedPacket | null {
  let res: DecodedPacket;
  try {
    res = packet.decode(buf);
  } catch {
    return null;
  }
  if (res.id !== id || !res.flag_qr) return null;
  const rq = res.questions?.[0];
  if (!rq || res.questions!.length !== 1) return null;
  if (rq.name.toLowerCase() !== q.name.toLowerCase() || rq.type !== q.type || (rq.class ?? 'IN') !== q.class) return null;
  return res;
}
