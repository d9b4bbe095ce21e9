import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { bindBoth } from './bind-both.js';

export interface TestDnsRecords {
  A?: string[];
  AAAA?: string[];
  CNAME?: string;
  TXT?: string[];
  ttl?: number;
}

export interface TestDnsServer {
  /** Listening on 127.0.0.1, UDP and TCP, same port. */
  port: number;
  address: string;
  /** Every query seen, in order. */
  queries: { name: string; type: string; transport: 'udp' | 'tcp' }[];
  set(name: string, records: TestDnsRecords): void;
  /** Answer queries for this name `ms` late (for timeouts). */
  setDelay(name: string, ms: number): void;
  close(): Promise<void>;
}

const MAX_CHAIN = 8;
const MAX_TCP_BUFFER = 65537;

const key = (name: string): string => name.toLowerCase().replace(/\.$/, '');

/**
 * A tiny authoritative-style DNS server for tests: known names answer from the table (CNAMEs are
 * followed through the table), unknown names get NXDOMAIN, known names without the type get an empty
 * NOERROR. Bound to 127.0.0.1 only.
 */
export async function startTestDnsServer(initial: Record<string, TestDnsRecords> = {}): Promise<TestDnsServer> {
  const table = new Map<string, TestDnsRecords>();
  const delays = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<net.Socket>();
  const queries: TestDnsServer['queries'] = [];
  for (const [n, r] of Object.entries(initial)) table.set(key(n), r);

  function answer(query: Buffer, transport: 'udp' | 'tcp'): { reply: Buffer; delay: number } | null {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return null;
    }
    const question = q.questions?.[0];
    if (!question) return null;
    const name = key(question.name);
    queries.push({ name, type: question.type, transport });
    const answers: dnsPacket.Answer[] = [];
    let rcode: 'NOERROR' | 'NXDOMAIN' = 'NOERROR';
    if (!table.has(name)) rcode = 'NXDOMAIN';
    let current: string | null = name;
    for (let depth = 0; current !== null && depth < MAX_CHAIN; depth++) {
      const rec = table.get(current);
      if (!rec) break;
      const ttl = rec.ttl ?? 60;
      if (rec.CNAME) {
        answers.push({ type: 'CNAME', name: current, ttl, data: rec.CNAME });
        if (question.type === 'CNAME') break;
        current = key(rec.CNAME);
        continue;
      }
      if (question.type === 'A') for (const a of rec.A ?? []) answers.push({ type: 'A', name: current, ttl, data: a });
      if (question.type === 'AAAA') {
        for (const a of rec.AAAA ?? []) answers.push({ type: 'AAAA', name: current, ttl, data: a });
      }
      if (question.type === 'TXT') for (const t of rec.TXT ?? []) answers.push({ type: 'TXT', name: current, ttl, data: t });
      current = null;
    }
    const reply = dnsPacket.encode({
      id: q.id,
      type: 'response',
      // QR | AA, RD copied from the query, and the rcode in the low bits.
      flags: dnsPacket.AUTHORITATIVE_ANSWER | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | (rcode === 'NXDOMAIN' ? 3 : 0),
      questions: [question],
      answers,
    });
    return { reply, delay: delays.get(name) ?? 0 };
  }

  function later(ms: number, fn: () => void): void {
    if (ms <= 0) return fn();
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  const onMessage = (sock: dgram.Socket) => (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const a = answer(msg, 'udp');
    if (!a) return;
    later(a.delay, () => sock.send(a.reply, rinfo.port, rinfo.address, () => undefined));
  };

  const tcp = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > MAX_TCP_BUFFER) return sock.destroy();
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const a = answer(msg, 'tcp');
        if (!a) return sock.destroy();
        const framed = Buffer.alloc(2 + a.reply.length);
        framed.writeUInt16BE(a.reply.length, 0);
        a.reply.copy(framed, 2);
        later(a.delay, () => {
          if (!sock.destroyed) sock.write(framed);
        });
      }
    });
  });

  const { udp, port } = await bindBoth(tcp);
  udp.on('message', onMessage(udp));

  return {
    port,
    address: '127.0.0.1',
    queries,
    set(name, records) {
      table.set(key(name), records);
    },
    setDelay(name, ms) {
      delays.set(key(name), ms);
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}
