import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { JsonLinesSink } from '../../src/decisions/json-sink.js';
import { weightOf, type DecisionRecord } from '../../src/decisions/record.js';
import { openSqliteStoreReadOnly } from '../../src/decisions/store/sqlite.js';
import { rawExchange } from '../helpers/raw.js';
import { compileForChild, rec, tempDir } from './helpers.js';

// Issue 9 item 8 and issue 10: the stdout JSON-lines log when its reader stops or goes away, and a busy
// port with --log-file. Real child processes, real pipes.

const BIN = path.resolve(import.meta.dirname, '../../bin/agent-egress.js');
const t = tempDir('ae-jsonsink-');
let compiled: string;

// A writer process: JSON lines to its stdout through the sink, as fast as it can, reporting its memory.
const FLOODER = `
const { JsonLinesSink } = await import(process.argv[2]);
const total = Number(process.argv[3]);
const sink = new JsonLinesSink(undefined, { maxBufferBytes: 2 * 1024 * 1024, logger: { warn: (o, m) => process.stderr.write('WARN ' + m + '\\n'), error: () => {} } });
const pad = 'x'.repeat(400);
let n = 0;
let peak = 0;
function burst() {
  for (let i = 0; i < 2000 && n < total; i++, n++) {
    sink.write({ time: new Date().toISOString(), id: 'r' + n, agent: 'a', client: '127.0.0.1:1', method: 'CONNECT', host: 'h.example', port: 443,
      path: null, address: null, verdict: 'deny', mode: 'enforce', rule: null, reason: 'no_rule', status: 403, bytesUp: 0, bytesDown: 0,
      timings: { dnsMs: null, connectMs: null, totalMs: null }, policyHash: null, detail: { pad } });
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  if (n < total) setImmediate(burst);
  else process.stderr.write('DONE ' + JSON.stringify({ peak, dropped: sink.dropped }) + '\\n');
}
burst();
process.on('SIGTERM', () => sink.close().then(() => process.exit(0)));
setInterval(() => {}, 1000);
`;

beforeAll(() => {
  compiled = compileForChild(['src/decisions/json-sink.ts']);
  writeFileSync(path.join(t.dir, 'flooder.mjs'), FLOODER);
}, 60_000);
afterAll(() => {
  rmSync(compiled, { recursive: true, force: true });
  t.cleanup();
});

function collect(stream: NodeJS.ReadableStream): { text: () => string; until: (re: RegExp, ms?: number) => Promise<string> } {
  let buf = '';
  stream.on('data', (c) => (buf += c));
  return {
    text: () => buf,
    async until(re, ms = 60_000) {
      const end = Date.now() + ms;
      while (!re.test(buf)) {
        if (Date.now() > end) throw new Error(`no ${re} within ${ms} ms; have: ${buf.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return buf;
    },
  };
}

const exited = (c: ChildProcess) => new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => c.once('exit', (code, signal) => r({ code, signal })));

/** SIGTERM, then SIGKILL only if the process is still there long after its grace period (the bug). */
async function terminate(c: ChildProcess, exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>) {
  c.kill('SIGTERM');
  const killer = setTimeout(() => c.kill('SIGKILL'), 20_000);
  const r = await exit;
  clearTimeout(killer);
  return r;
}

async function freePortHeld(): Promise<{ port: number; close: () => void }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as net.AddressInfo).port, close: () => s.close() };
}

function startServe(dataDir: string) {
  const child = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--allow', 'example.com', '--data-dir', dataDir, '--no-admin', '--no-alerts', '--shutdown-grace', '2s'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const err = collect(child.stderr!);
  const exit = exited(child);
  const port = err.until(/"listen":"127\.0\.0\.1:\d+"/, 30_000).then((s) => Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(s)![1]));
  return { child, err, exit, port };
}

async function flood(port: number, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i += 16) {
    const out = await Promise.all(Array.from({ length: Math.min(16, n - i) }, (_, k) => rawExchange(port, `CONNECT ${tag}${i + k}.blocked.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`, 3000)));
    for (const o of out) expect(o).toMatch(/^HTTP\/1\.1 403 /);
  }
}

async function storedCount(dataDir: string, tag: string): Promise<number> {
  const ro = openSqliteStoreReadOnly({ dataDir });
  try {
    return [...ro.iterateJson({ host: `${tag}*.blocked.example` })].reduce((n, j) => n + weightOf(JSON.parse(j) as DecisionRecord), 0);
  } finally {
    await ro.close();
  }
}

describe('JSON-lines decision log', () => {
  it('writes every record to a file on close, and meters what it could not write', async () => {
    const file = path.join(t.dir, 'metered', 'decisions.jsonl');
    const registry = new Registry();
    const warned: string[] = [];
    const sink = new JsonLinesSink(file, { logger: { warn: (_o, m) => void warned.push(m ?? ''), error: () => {} } });
    sink.registerMetrics(registry);
    const recs = Array.from({ length: 50 }, () => rec());
    for (const r of recs) sink.write(r);
    await sink.close();
    expect(readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(recs.map((r) => r.id));
    sink.write(rec());
    sink.write(rec());
    expect(await registry.metrics()).toMatch(/^agent_egress_decision_log_dropped_records_total 2$/m);
    expect(warned).toHaveLength(1);
  });

  it('a stdout nobody reads: memory stays bounded, the loss is counted and logged once, SIGTERM ends it', async () => {
    const total = 200_000; // about 100 MB of lines
    const child = spawn(process.execPath, [path.join(t.dir, 'flooder.mjs'), pathToFileURL(path.join(compiled, 'decisions/json-sink.js')).href, String(total)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.pause(); // never read
    const err = collect(child.stderr!);
    const exit = exited(child);
    const done = JSON.parse(/DONE (.*)\n/.exec(await err.until(/DONE .*\n/))![1]) as { peak: number; dropped: number };
    expect(done.dropped).toBeGreaterThan(total / 2);
    expect(done.peak).toBeLessThan(100 * 1024 * 1024);
    expect(err.text().match(/WARN decision log \(JSON lines\) is dropping records/g)).toHaveLength(1);
    expect(await terminate(child, exit)).toEqual({ code: 0, signal: null });
  }, 90_000);

  it('serve with a stdout nobody reads: every record is stored, and SIGTERM exits within the grace period', async () => {
    const dataDir = path.join(t.dir, 'stuck');
    const s = startServe(dataDir);
    s.child.stdout!.pause(); // the pipe fills (64 KiB), then every write would block
    await flood(await s.port, 1500, 'stuck');
    expect(await terminate(s.child, s.exit)).toEqual({ code: 0, signal: null });
    expect(await storedCount(dataDir, 'stuck')).toBe(1500);
  }, 120_000);

  it('serve whose stdout reader went away (EPIPE): it keeps serving and SIGTERM exits', async () => {
    const dataDir = path.join(t.dir, 'epipe');
    const s = startServe(dataDir);
    const port = await s.port;
    s.child.stdout!.destroy(); // the read end is closed: writes get EPIPE
    await flood(port, 300, 'gone');
    expect(await terminate(s.child, s.exit)).toEqual({ code: 0, signal: null });
    expect(await storedCount(dataDir, 'gone')).toBe(300);
    expect(s.err.text()).not.toMatch(/\n\s+at /); // no stack trace
  }, 120_000);

  it('--log-file with a busy port: one clear line, exit 2, the file created', async () => {
    const held = await freePortHeld();
    try {
      const logFile = path.join(t.dir, 'logs', 'decisions.jsonl');
      const child = spawn(process.execPath, [BIN, 'serve', '--listen', `127.0.0.1:${held.port}`, '--log-file', logFile, '--allow', 'example.com', '--no-store', '--no-admin'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const err = collect(child.stderr!);
      const r = await exited(child);
      await new Promise((res) => setTimeout(res, 50));
      expect(r.code).toBe(2);
      expect(err.text()).not.toMatch(/sonic boom|\n\s+at /);
      const lines = err.text().trim().split('\n').filter((l) => !l.startsWith('{'));
      expect(lines).toEqual([expect.stringMatching(/^agent-egress: cannot start: .*EADDRINUSE.*127\.0\.0\.1:\d+$/)]);
      expect(existsSync(logFile)).toBe(true);
    } finally {
      held.close();
    }
  }, 60_000);
});
