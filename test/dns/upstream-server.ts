import net from 'node:net';
import * as packet from 'dns-packet';
import type { Answer } from 'dns-packet';
import { bindBoth } from '../helpers/bind-both.js';

export interface SeenQuery {
  name: string;
  type: string;
  transport: 'udp' | 'tcp';
}

export interface Zone {
  /** lower-case name -> records answered for it (CNAMEs are followed by the server, like a recursor). */
  [name: string]: Answer[];
}

export interface TestUpstream {
  port: number;
  seen: SeenQuery[];
  close(): Promise<void>;
}

/**
 * A tiny recursive-resolver stand-in on 127.0.0.1 (UDP and TCP, same port) that answers from a
 * fixed zone and records every query it receives, so tests can assert what left the filter.
 * Names in `truncateUdp` are answered with TC over UDP, forcing the TCP retry.
 */
export async function startTestUpstream(zone: Zone, opts: { truncateUdp?: string[] } = {}): Promise<TestUpstream> {
  const seen: SeenQuery[] = [];
  const answer = (msg: Buffer, transport: 'udp' | 'tcp'): Buffer | null => {
    let q: packet.DecodedPacket;
    try {
      q = packet.decode(msg);
    } catch {
      return null;
    }
    const question = q.questions?.[0];
    if (!question) return null;
    const name = question.name.toLowerCase();
    seen.push({ name, type: question.type, transport });
    if (transport === 'udp' && opts.truncateUdp?.includes(name)) {
      return packet.encode({ type: 'response', id: q.id, flags: packet.TRUNCATED_RESPONSE, questions: [question] });
    }
    const answers: Answer[] = [];
    let cur = name;
    let known = false;
    for (let i = 0; i < 10; i++) {
      const rs = zone[cur];
      if (!rs) break;
      known = true;
      const cname = rs.find((r) => r.type === 'CNAME');
      answers.push(...rs.filter((r) => r.type === question.type || r.type === 'CNAME'));
      if (!cname || question.type === 'CNAME') break;
      cur = String((cname as { data: unknown }).data).toLowerCase();
    }
    const soa: Answer = {
      type: 'SOA',
      name: 'test',
      ttl: 30,
      data: { mname: 'ns.test', rname: 'admin.test', serial: 1, refresh: 60, retry: 60, expire: 60, minimum: 30 },
    };
    return packet.encode({
      type: 'response',
      id: q.id,
      flags: packet.RECURSION_AVAILABLE | (known ? 0 : 3),
      questions: [question],
      answers,
      authorities: answers.length ? [] : [soa],
    });
  };

  const tcp = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        const len = buf.readUInt16BE(0);
        const out = answer(buf.subarray(2, len + 2), 'tcp');
        buf = buf.subarray(len + 2);
        if (out) {
          const l = Buffer.alloc(2);
          l.writeUInt16BE(out.length);
          sock.write(Buffer.concat([l, out]));
        }
      }
    });
  });
  // UDP and TCP on one port number, retried when that number is taken on TCP (issue 10: EADDRINUSE).
  const { udp, port } = await bindBoth(tcp);
  udp.on('message', (msg, rinfo) => {
    const out = answer(msg, 'udp');
    if (out) udp.send(out, rinfo.port, rinfo.address);
  });
  return {
    port,
    seen,
    close: async () => {
      await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
    },
  };
}
