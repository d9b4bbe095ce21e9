import dgram from 'node:dgram';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { bindBoth, bindUdpEphemeral } from '../helpers/bind-both.js';
import { startTestUpstream } from './upstream-server.js';

// Issue 10: the test upstream bound UDP on port 0 and then TCP on that same number without retrying, so a
// busy machine (that number already taken on TCP) failed the suite with EADDRINUSE.
describe('test servers bind UDP and TCP on one ephemeral port, retrying a taken one', () => {
  it('moves to a fresh pair when the UDP port number is taken on TCP', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const taken = (holder.address() as net.AddressInfo).port;
    // The first UDP socket lands on the port another process holds on TCP (the race, made certain).
    const first = dgram.createSocket('udp4');
    await new Promise<void>((r) => first.bind(taken, '127.0.0.1', () => r()));
    let calls = 0;
    const bindUdp = (): Promise<dgram.Socket> => (calls++ === 0 ? Promise.resolve(first) : bindUdpEphemeral());
    const tcp = net.createServer();
    try {
      const { udp, port } = await bindBoth(tcp, bindUdp);
      expect(calls).toBe(2);
      expect(port).not.toBe(taken);
      expect(udp.address().port).toBe(port);
      expect((tcp.address() as net.AddressInfo).port).toBe(port);
      // The first UDP socket was given back.
      const again = dgram.createSocket('udp4');
      await new Promise<void>((r, j) => {
        again.once('error', j);
        again.bind(taken, '127.0.0.1', () => r());
      });
      again.close();
      udp.close();
    } finally {
      tcp.close();
      holder.close();
    }
  });

  it('the test upstream uses it: many at once all bind', async () => {
    const ups = await Promise.all(Array.from({ length: 20 }, () => startTestUpstream({})));
    expect(new Set(ups.map((u) => u.port)).size).toBe(20);
    await Promise.all(ups.map((u) => u.close()));
  });
});
