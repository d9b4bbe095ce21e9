import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execFileSync } from 'node:child_process';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { alive } from '../helpers/process.js';
import { rawExchange } from '../helpers/raw.js';

const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-workers-'));
let origin: Origin;

beforeAll(async () => {
  origin = await startHttpOrigin();
});
afterAll(() => origin?.close());

const policy = (ports: number[]) =>
  `version: 1\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: origin\n    action: allow\n    cidrs: [127.0.0.1/32]\n    ports: [${ports.join(', ')}]\n`;

describe('serve --workers', () => {
  it('workers share the listener, write one verifiable store, aggregate /metrics, reload on SIGHUP and stop cleanly', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policy([1]));
    const data = join(dir, 'data');
    const log = join(dir, 'decisions.log');
    const child = spawn('node', [BIN, 'serve', '--workers', '2', '--listen', '127.0.0.1:0', '--policy', file, '--policy-poll', '0',
      '--data-dir', data, '--log-file', log, '--admin-listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    try {
      for (let i = 0; i < 120 && (err.match(/agent-egress proxy listening/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 250));
      expect((err.match(/agent-egress proxy listening/g) ?? []).length).toBe(2);
      const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(err)![1]);
      const admin = /"admin":"(127\.0\.0\.1:\d+)"/.exec(err)![1];

      // Denied under the first policy, by whichever worker takes the connection.
      for (let i = 0; i < 30; i++) expect(await rawExchange(port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 /);

      // SIGHUP to the primary reaches every worker: all later connections are allowed.
      writeFileSync(file, policy([origin.port]));
      child.kill('SIGHUP');
      // The primary reads the just-written file once it has settled (--policy-settle, 2 s), then tells the workers.
      const auth = { authorization: `Bearer ${readFileSync(join(data, 'admin-token'), 'utf8').trim()}` };
      const reloads = async () => ((await (await request(`http://${admin}/api/policy`, { headers: auth })).body.json()) as { reloads: number }).reloads;
      for (let i = 0; i < 100 && (await reloads()) < 1; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await reloads()).toBeGreaterThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 500));
      for (let i = 0; i < 10; i++) expect(await rawExchange(port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`, 150)).toMatch(/^HTTP\/1\.1 200 /);

      const metrics = await request(`http://${admin}/metrics`);
      const text = await metrics.body.text();
      expect(text).toMatch(/agent_egress_decisions_total\{verdict="deny",reason="no_rule"[^}]*\} 30/);

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(lines).toHaveLength(40);
      // Ids end in a per-process part: both workers took connections.
      expect(new Set(lines.map((l) => l.id.slice(-6))).size).toBe(2);
      const verify = execFileSync('node', [BIN, 'log', 'verify', '--data-dir', data], { encoding: 'utf8' });
      expect(verify).toMatch(/^ok: \d+ records verified/);
      // The 30 identical denials are folded per worker past 10 a window (docs/decision-log.md), with exact counts.
      const summary = JSON.parse(execFileSync('node', [BIN, 'log', 'summary', '--data-dir', data, '--since', '1h', '--json'], { encoding: 'utf8' }));
      expect(summary.totals).toEqual({ allow: 10, deny: 30 });
    } finally {
      child.kill('SIGKILL');
    }
  });

  const humanLines = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('{'));

  it('a busy port: exits 2 at once with one line naming the cause, and never re-forks', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as AddressInfo).port;
    try {
      const r = await new Promise<{ code: number | null; err: string }>((resolveP) => {
        const child = spawn('node', [BIN, 'serve', '--workers', '2', '--listen', `127.0.0.1:${port}`, '--no-store'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr!.on('data', (d) => (err += d));
        const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.once('exit', (code) => {
          clearTimeout(kill);
          resolveP({ code, err });
        });
      });
      expect(r.code).toBe(2);
      expect(humanLines(r.err)).toEqual([expect.stringMatching(/^agent-egress: cannot start: .*EADDRINUSE.*127\.0\.0\.1:\d+/)]);
      expect(r.err).not.toContain('starting another');
    } finally {
      busy.close();
    }
  });

  it('/readyz is false while no worker listens; workers that keep dying make the primary give up (exit 1)', async () => {
    const file = join(dir, 'crash-policy.yaml');
    writeFileSync(file, policy([1]));
    const child = spawn('node', [BIN, 'serve', '--workers', '2', '--listen', '127.0.0.1:0', '--policy', file, '--policy-poll', '0',
      '--data-dir', join(dir, 'crash-data'), '--no-decision-log', '--admin-listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    try {
      for (let i = 0; i < 120 && (err.match(/agent-egress proxy listening/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 250));
      const pids = [...err.matchAll(/"pid":(\d+)[^\n]*agent-egress proxy listening/g)].map((m) => Number(m[1]));
      expect(pids).toHaveLength(2);
      const admin = /"admin":"(127\.0\.0\.1:\d+)"/.exec(err)![1];
      expect((await request(`http://${admin}/readyz`)).statusCode).toBe(200);

      // From now on no worker can start (the file is invalid); the running ones die.
      writeFileSync(file, 'version: 1\nrules: [oops\n');
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      // Reaped by the primary (a zombie still answers kill 0), so the primary has seen both exits.
      for (let i = 0; i < 80 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
      expect(pids.some(alive)).toBe(false);
      const ready = await request(`http://${admin}/readyz`);
      expect(ready.statusCode).toBe(503);
      expect(await ready.body.json()).toEqual({ ready: false });

      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 40_000))]);
      expect(code).toBe(1);
      expect(humanLines(err)).toEqual([expect.stringMatching(/^agent-egress: workers exited 5 times within 60 s \(last: invalid policy: .*\); giving up$/)]);
      // Each restart waited longer than the one before (logged, not timed).
      const delays = [...err.matchAll(/"restartInMs":(\d+)/g)].map((m) => Number(m[1]));
      expect(delays).toEqual([500, 1000, 2000, 4000]);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
