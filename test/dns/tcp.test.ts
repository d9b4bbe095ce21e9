import net from 'node:net';
import * as packet from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsFilter, type DnsFilterHandle } from '../../src/dns/index.js';
import { AddressGuard } from '../../src/net/guard.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { MemorySink, useFilter } from './client.js';
import { startTestUpstream, type TestUpstream } from './upstream-server.js';

const policy = compilePolicy(
  parsePolicyText('version: 1\nrules:\n  - name: ex\n    action: allow\n    hosts: ["*.example.com"]\n', 't.yaml'),
);

let upstream: TestUpstream;
let filter: DnsFilterHandle;

beforeAll(async () => {
  upstream = await startTestUpstream({ 'a.example.com': [{ type: 'A', name: 'a.example.com', ttl: 60, data: '93.184.216.34' }] });
  const guard = new AddressGuard({});
  filter = await startDnsFilter({
    listen: '127.0.0.1:0',
    upstreams: [`127.0.0.1:${upstream.port}`],
    policy: () => policy,
    guard: () => guard,
    sink: new MemorySink(),
    maxTcpConnections: 2,
    tcpIdleMs: 300,
  });
});

afterAll(async () => {
  await filter?.close();
  await upstream?.close();
});

const frame = (id: number, name: string): Buffer =>
  packet.streamEncode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name }] });

/** Connect, send, and collect framed replies until `want` arrived or the server closed (bounded by the test timeout). */
function exchange(port: number, data: Buffer[], want: number): Promise<{ replies: packet.DecodedPacket[]; closed: boolean }> {
  return new Promise((resolve) => {
    const replies: packet.DecodedPacket[] = [];
    let buf = Buffer.alloc(0);
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      for (const d of data) s.write(d);
    });
    s.on('error', () => {});
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        const len = buf.readUInt16BE(0);
        replies.push(packet.decode(buf.subarray(2, len + 2)));
        buf = buf.subarray(len + 2);
      }
      if (replies.length >= want) {
        s.destroy();
        resolve({ replies, closed: false });
      }
    });
    s.on('close', () => resolve({ replies, closed: true }));
  });
}

describe('filtering resolver over TCP', () => {
  it('answers pipelined queries in order, across split frames', async () => {
    const q1 = frame(11, 'a.example.com');
    const q2 = frame(12, 'denied.test');
    const q3 = frame(13, 'a.example.com');
    const joined = Buffer.concat([q1, q2, q3]);
    const cut = q1.length + q2.length + 5;
    const { replies } = await exchange(filter.port, [joined.subarray(0, cut), joined.subarray(cut)], 3);
    expect(replies.map((r) => r.id)).toEqual([11, 12, 13]);
    expect(replies.map((r) => (r as unknown as { rcode: string }).rcode)).toEqual(['NOERROR', 'NXDOMAIN', 'NOERROR']);
    expect(replies[0].answers?.[0]).toMatchObject({ type: 'A', data: '93.184.216.34' });
  });

  it('answers an undecodable message with FORMERR and keeps the connection usable', async () => {
    const junk = Buffer.from([0, 14, 0x55, 0x66, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 0x61]);
    const { replies } = await exchange(filter.port, [junk, frame(21, 'a.example.com')], 2);
    expect(replies[0].id).toBe(0x5566);
    expect((replies[0] as unknown as { rcode: string }).rcode).toBe('FORMERR');
    expect(replies[1].id).toBe(21);
  });

  it('closes idle connections', async () => {
    const { replies, closed } = await exchange(filter.port, [], 1);
    expect(replies).toEqual([]);
    expect(closed).toBe(true);
  });

  it('refuses connections beyond the limit while existing ones are served', async () => {
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        held.push(
          await new Promise<net.Socket>((r) => {
            const s = net.connect({ host: '127.0.0.1', port: filter.port }, () => r(s));
            s.on('error', () => {});
          }),
        );
      }
      const third = await exchange(filter.port, [frame(31, 'a.example.com')], 1);
      expect(third.replies).toEqual([]);
      expect(third.closed).toBe(true);
    } finally {
      for (const s of held) s.destroy();
    }
    // Once the others are gone (the server notices their close asynchronously), new connections are served again.
    let served = false;
    for (let i = 0; i < 20 && !served; i++) {
      const r = await exchange(filter.port, [frame(32, 'a.example.com')], 1);
      served = r.replies.length === 1;
    }
    expect(served).toBe(true);
  });
});

describe('TCP lock-out by slow clients', () => {
  const env = useFilter(
    { 'a.example.com': [{ type: 'A', name: 'a.example.com', ttl: 60, data: '93.184.216.34' }] },
    'version: 1\nrules:\n  - {name: ex, action: allow, hosts: ["*.example.com"]}\n',
    { maxTcpConnections: 6, maxTcpPerClient: 3, tcpIdleMs: 800 },
  );

  /** A connection from `from` that sends one byte of a query every 100 ms; resolves when the server closes it. */
  function dripper(from: string): { opened: Promise<void>; closed: Promise<void>; stop: () => void } {
    const bytes = frame(41, `${'d'.repeat(60)}.example.com`);
    let timer: NodeJS.Timeout | undefined;
    let s!: net.Socket;
    const opened = new Promise<void>((resolve) => {
      s = net.connect({ host: '127.0.0.1', port: env.filter.port, localAddress: from }, () => {
        let i = 0;
        timer = setInterval(() => {
          if (i < bytes.length && !s.destroyed) s.write(bytes.subarray(i, ++i));
        }, 100);
        resolve();
      });
    });
    s.on('error', () => {});
    const closed = new Promise<void>((resolve) =>
      s.on('close', () => {
        clearInterval(timer);
        resolve();
      }),
    );
    return { opened, closed, stop: () => s.destroy() };
  }

  it('caps one client, serves another meanwhile, and closes drippers at the query deadline', async () => {
    const drips = Array.from({ length: 6 }, () => dripper('127.0.0.2'));
    try {
      await Promise.all(drips.map((d) => d.opened));
      // Another client is answered over TCP while the first one drips on every connection it may hold.
      const other = await new Promise<{ replies: packet.DecodedPacket[]; closed: boolean }>((resolve) => {
        const replies: packet.DecodedPacket[] = [];
        let buf = Buffer.alloc(0);
        const s = net.connect({ host: '127.0.0.1', port: env.filter.port, localAddress: '127.0.0.3' }, () => s.write(frame(42, 'a.example.com')));
        s.on('error', () => {});
        s.on('data', (c) => {
          buf = Buffer.concat([buf, c]);
          if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
            replies.push(packet.decode(buf.subarray(2, buf.readUInt16BE(0) + 2)));
            s.destroy();
            resolve({ replies, closed: false });
          }
        });
        s.on('close', () => resolve({ replies, closed: true }));
      });
      expect(other.replies.map((r) => r.id)).toEqual([42]);
      expect(other.replies[0].answers?.[0]).toMatchObject({ type: 'A', data: '93.184.216.34' });
      // Every dripping connection is closed by the server although it kept sending bytes (the frame
      // takes 6 s to drip; the test would time out if only an idle timer, reset per byte, applied).
      await Promise.all(drips.map((d) => d.closed));
    } finally {
      for (const d of drips) d.stop();
    }
  });
});
