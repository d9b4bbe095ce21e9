import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { connectVia, requestIpv4 } from './socks-helpers.js';

const BIN = join(resolve(__dirname, '../..'), 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-socks-workers-'));
let origin: Origin;

beforeAll(async () => {
  origin = await startHttpOrigin();
});
afterAll(() => origin?.close());

describe('serve --workers with --socks-listen', () => {
  it('the workers share the SOCKS5 listener; each refuses its own listeners; records from both reach the log', async () => {
    const log = join(dir, 'decisions.log');
    const child = spawn(
      'node',
      [BIN, 'serve', '--workers', '2', '--listen', '127.0.0.1:0', '--socks-listen', '127.0.0.1:0', '--no-store', '--allow', '127.0.0.1/32:1-65535', '--allow-address', '127.0.0.1/32', '--log-file', log, '--log-format', 'json'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    try {
      for (let i = 0; i < 120 && (err.match(/agent-egress proxy listening/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 250));
      const starts = err.split('\n').filter((l) => l.includes('agent-egress proxy listening')).map((l) => JSON.parse(l) as { socks: string });
      expect(starts).toHaveLength(2);
      // One shared port for both workers.
      expect(starts[0].socks).toBe(starts[1].socks);
      const port = Number(starts[0].socks.split(':')[1]);
      for (let i = 0; i < 20; i++) {
        const { c, code } = await connectVia(port, requestIpv4('127.0.0.1', origin.port));
        expect(code).toBe(0);
        c.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        expect((await c.untilClosed()).toString()).toMatch(/^HTTP\/1\.1 200/);
      }
      // The policy allows every port of 127.0.0.1, but the SOCKS port is this cluster's own listener: refused.
      const self = await connectVia(port, requestIpv4('127.0.0.1', port));
      expect(self.code).toBe(2);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const allowed = lines.filter((l) => l.method === 'SOCKS5' && l.verdict === 'allow');
      expect(allowed).toHaveLength(20);
      expect(new Set(allowed.map((l) => l.id.slice(-6))).size).toBe(2);
      const refused = lines.filter((l) => l.method === 'SOCKS5' && l.port === port);
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatchObject({ verdict: 'deny', reason: 'private_address', detail: { refusedAddresses: [{ address: '127.0.0.1', why: 'self' }] } });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
