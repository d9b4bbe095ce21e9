import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGreeting, parseRequest, parseUserPass } from '../../src/capture/socks5-wire.js';
import { prng } from '../helpers/prng.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { connectVia, greeting, RawSocks, requestDomain, requestIpv4, requestIpv6, userPass } from './socks-helpers.js';

const SEED = Number(process.env.SOCKS_FUZZ_SEED ?? 20261202);

function seeds(): Buffer[] {
  return [
    Buffer.concat([greeting(0), requestDomain('fuzz.test', 443)]),
    Buffer.concat([greeting(0, 2), requestIpv4('127.0.0.1', 80)]),
    Buffer.concat([greeting(2), userPass('agent', 'password'), requestIpv6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 443)]),
    Buffer.concat([greeting(0), requestDomain('x'.repeat(255), 1)]),
    Buffer.from([4, 1, 0, 80, 0, 0, 0, 1, 0x41, 0, 0x61, 0x2e, 0x74, 0]),
  ];
}

function mutate(rand: () => number, input: Buffer): Buffer {
  const b = [...input];
  const n = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < n; i++) {
    const op = Math.floor(rand() * 5);
    const at = Math.floor(rand() * (b.length + 1));
    if (op === 0 && b.length) b[at % b.length] = Math.floor(rand() * 256);
    else if (op === 1) b.splice(at, 0, ...Array.from({ length: 1 + Math.floor(rand() * 8) }, () => Math.floor(rand() * 256)));
    else if (op === 2) b.splice(at, 1 + Math.floor(rand() * 8));
    else if (op === 3) b.length = Math.min(b.length, at);
    else if (b.length) b[at % b.length] = [0, 1, 2, 3, 4, 5, 0xff, 0x7f][Math.floor(rand() * 8)];
  }
  return Buffer.from(b);
}

function sample(rand: () => number): Buffer {
  if (rand() < 0.15) return Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));
  const base = seeds();
  return mutate(rand, base[Math.floor(rand() * base.length)]);
}

describe('fuzzed SOCKS5 input', () => {
  it(`the pure parsers never throw and never claim more bytes than they were given (seed ${SEED})`, () => {
    const rand = prng(SEED);
    let parsed = 0;
    for (let i = 0; i < 20_000; i++) {
      const buf = sample(rand);
      for (const parse of [parseGreeting, parseUserPass, parseRequest]) {
        const r = parse(buf);
        if (r.kind === 'ok') {
          parsed++;
          expect(r.used).toBeLessThanOrEqual(buf.length);
        }
      }
    }
    expect(parsed).toBeGreaterThan(1_000);
  });

  describe('over real sockets', () => {
    let proxy: TestProxy;
    let port: number;
    beforeAll(async () => {
      // Nothing is allowed: every connection must end, by a refusal, a close, or the handshake timeout.
      proxy = await startTestProxy({ flags: { allow: [], deny: [], allowAddress: [] }, limits: { headersTimeoutMs: 300 }, socks: { listen: '127.0.0.1:0' } });
      port = proxy.egress.socks!.address.port;
    });
    afterAll(async () => {
      await proxy?.close();
    });

    it(`mutated greetings and requests, in random segments, always end in a reply or a close and never crash (seed ${SEED})`, async () => {
      const rand = prng(SEED + 1);
      const ITERATIONS = 400;
      const BATCH = 25;
      let ended = 0;
      for (let i = 0; i < ITERATIONS; i += BATCH) {
        await Promise.all(
          Array.from({ length: BATCH }, async () => {
            const bytes = sample(rand);
            const cuts = Array.from({ length: Math.floor(rand() * 4) }, () => Math.floor(rand() * (bytes.length + 1))).sort((a, b) => a - b);
            const c = await RawSocks.open(port);
            let from = 0;
            for (const cut of [...cuts, bytes.length]) {
              if (c.closed) break;
              if (cut > from) c.write(bytes.subarray(from, cut));
              from = Math.max(from, cut);
              await new Promise((r) => setTimeout(r, 1));
            }
            // Within the handshake timeout plus the close linger, the proxy has closed every connection.
            await c.untilClosed(3_000);
            ended++;
          }),
        );
      }
      expect(ended).toBe(ITERATIONS);
      const socks = proxy.sink.records.filter((r) => r.method === 'SOCKS5');
      expect(socks.length).toBeGreaterThan(0);
      expect(socks.every((r) => r.verdict === 'deny')).toBe(true);
      // Still serving: a well-formed request is refused by the policy, with its record.
      const { code } = await connectVia(port, requestDomain('after-fuzz.test', 443));
      expect(code).toBe(2);
      expect(await proxy.sink.waitFor((r) => r.method === 'SOCKS5' && r.host === 'after-fuzz.test')).toMatchObject({ reason: 'no_rule' });
      expect(proxy.egress.socks!.server.stats().activeConnections).toBeLessThanOrEqual(1);
    });
  });
});
