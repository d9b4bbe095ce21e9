import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runQuery, runSummary, runTail } from '../../src/cli/commands/log.js';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import type { PolicyHolder } from '../../src/policy/holder.js';
import { startTestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';
import { rec, tempDir } from './helpers.js';

// Issue 10, the log CLI: --limit 0 streams everything, summaries group by registrable domain, tables
// keep RULE whole and line up when streamed, failures read as errors, spike alerts are logged once.

const BIN = path.resolve(import.meta.dirname, '../../bin/agent-egress.js');
const t = tempDir('ae-logcli-');
let store: SqliteDecisionStore;
let admin: AdminServer;
const now = Date.now();
const BULK = 2500;
const LONG_RULE = 'allow-internal-package-mirrors-for-the-build-farm';

function capture() {
  const chunks: string[] = [];
  return { out: (s: string) => void chunks.push(s), text: () => chunks.join('') };
}

beforeAll(async () => {
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
  for (let i = 0; i < BULK; i++) store.write(rec({ time: new Date(now - 600_000 + i).toISOString(), agent: 'bulk', host: `h${i}.example.com` }));
  for (let i = 0; i < 30; i++) {
    store.write(rec({ time: new Date(now - 1000 + i).toISOString(), agent: 'exfil', host: `exfil${i}.attacker.example`, verdict: 'deny', reason: 'no_rule', rule: null, status: 403 }));
  }
  // As the proxy records them: a failed lookup names no rule (detail.policy does), an upstream failure keeps allow.
  store.write(rec({ time: new Date(now - 500).toISOString(), agent: 'llm', host: 'api.openai.com', verdict: 'deny', reason: 'dns_failure', rule: null, status: 502, detail: { policy: { verdict: 'allow', reason: 'rule_allow', rule: 'llm-apis' } } }));
  store.write(rec({ time: new Date(now - 450).toISOString(), agent: 'llm', host: 'api.anthropic.com', verdict: 'allow', reason: 'upstream_timeout', rule: 'llm-apis', status: 504 }));
  store.write(rec({ time: new Date(now - 400).toISOString(), agent: 'llm', host: 'mirror.internal', verdict: 'allow', reason: 'rule_allow', rule: LONG_RULE }));
  store.flush();
  const policy = { state: () => ({}) } as unknown as PolicyHolder;
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: 'tok', store, policy, metricsRegistry: new Registry(), ready: () => true, streamPollMs: 50 });
});

afterAll(async () => {
  await admin?.close();
  await store?.close();
  t.cleanup();
});

describe('log query --limit 0', () => {
  it('returns every match from the file and, page by page, through the admin API', async () => {
    const f = capture();
    await runQuery({ dataDir: t.dir, agent: 'bulk', limit: '0', json: true }, f.out);
    const ids = f.text().trimEnd().split('\n').map((l) => JSON.parse(l).id as string);
    expect(ids).toHaveLength(BULK);
    expect(new Set(ids).size).toBe(BULK);
    const u = capture();
    await runQuery({ url: `http://127.0.0.1:${admin.port}`, token: 'tok', agent: 'bulk', limit: '0', json: true }, u.out);
    expect(u.text().trimEnd().split('\n').map((l) => JSON.parse(l).id)).toEqual(ids);
    // An explicit limit above the API's page cap is honoured across pages too.
    const l = capture();
    await runQuery({ url: `http://127.0.0.1:${admin.port}`, token: 'tok', agent: 'bulk', limit: '1500', json: true }, l.out);
    expect(l.text().trimEnd().split('\n')).toHaveLength(1500);
    await expect(runQuery({ dataDir: t.dir, limit: '-1' }, l.out)).rejects.toThrow(/limit/);
  });

  it('the real binary streams a large store through a pipe with bounded memory, and ends cleanly when the reader goes', async () => {
    const big = tempDir('ae-logcli-big-');
    try {
      const s = createSqliteStore({ dataDir: big.dir });
      const pad = 'x'.repeat(4000);
      const N = 30_000; // about 120 MB of JSON lines
      for (let i = 0; i < N; i++) s.write(rec({ time: new Date(now - N + i).toISOString(), detail: { pad } }));
      await s.close();
      const child = spawn(process.execPath, [BIN, 'log', 'query', '--data-dir', big.dir, '--limit', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.pause();
      const closed = new Promise<number | null>((r) => child.on('close', r));
      // Nobody reads for a while: a writer without backpressure would buffer the whole output in memory.
      const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]);
      let peak = 0;
      for (let i = 0; i < 30; i++) {
        await new Promise((r) => setTimeout(r, 50));
        peak = Math.max(peak, rssKb());
      }
      // While nobody reads, the command waits for the pipe: it holds a few chunks, not the output.
      expect(peak).toBeGreaterThan(0);
      expect(peak).toBeLessThan(110 * 1024);
      let lines = 0;
      let tail = '';
      child.stdout.on('data', (c: Buffer) => {
        const text = tail + c.toString();
        const parts = text.split('\n');
        tail = parts.pop()!;
        for (const p of parts) {
          if (lines % 5000 === 0) expect(JSON.parse(p).detail.pad).toBe(pad);
          lines++;
        }
      });
      child.stdout.resume();
      expect(await closed).toBe(0);
      expect(lines).toBe(N);

      // `| head -1`: the reader goes away after the first chunk; the command ends at once, status 0.
      const early = spawn(process.execPath, [BIN, 'log', 'query', '--data-dir', big.dir, '--limit', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      early.stderr.on('data', (c) => (err += c));
      early.stdout.once('data', () => early.stdout.destroy());
      expect(await new Promise<number | null>((r) => early.on('close', r))).toBe(0);
      expect(err).toBe('');
    } finally {
      big.cleanup();
    }
  }, 120_000);
});

describe('tables and summaries', () => {
  it('summary groups denies by registrable domain with a count, and lists failures as errors', async () => {
    const c = capture();
    await runSummary({ dataDir: t.dir, since: '1h' }, c.out);
    const text = c.text();
    const domainLines = text.split('\n').filter((l) => l.includes('attacker.example'));
    expect(domainLines).toHaveLength(1);
    expect(domainLines[0]).toMatch(/^\s+30\s+attacker\.example\s+\(30 hosts\)$/);
    // BULK + the long-rule allow are allows; the upstream timeout is an error, not an allow.
    expect(text).toMatch(new RegExp(`allow ${BULK + 1}\\s+deny 30\\s+error 2`));
    expect(text).toMatch(/Errors[^\n]*\n(?:\s+1\s+(?:dns_failure|upstream_timeout)\n){2}/);
    expect(text).not.toMatch(/Denies by reason\n(?:\s+\d+\s+\w+\n)*\s+1\s+dns_failure/);
    const j = capture();
    await runSummary({ dataDir: t.dir, since: '1h', json: true }, j.out);
    const s = JSON.parse(j.text());
    expect(s.topDeniedDomains[0]).toEqual({ domain: 'attacker.example', count: 30, hosts: 30 });
    expect(s.errorsByReason).toEqual([
      { reason: 'dns_failure', count: 1 },
      { reason: 'upstream_timeout', count: 1 },
    ]);
    expect(s.totals).toEqual({ allow: BULK + 2, deny: 31 });
  });

  it('a table never cuts RULE, --wide cuts nothing, and a DNS failure reads as an error', async () => {
    const c = capture();
    await runQuery({ dataDir: t.dir, agent: 'llm' }, c.out);
    const lines = c.text().split('\n');
    expect(lines.find((l) => l.includes('mirror.internal'))).toContain(LONG_RULE);
    for (const host of ['api.openai.com', 'api.anthropic.com']) {
      const failed = lines.find((l) => l.includes(host))!;
      expect(failed).toMatch(/^\S+ \S+\s+error\s+llm\s/);
      expect(failed).not.toMatch(/\b(?:deny|allow)\b/);
    }
    expect(c.text()).toMatch(/error = the policy allowed it/);

    const longHost = `${'very-long-label-'.repeat(4)}.example.com`;
    store.write(rec({ time: new Date().toISOString(), agent: 'wide', host: longHost }));
    store.flush();
    const cut = capture();
    await runQuery({ dataDir: t.dir, agent: 'wide' }, cut.out);
    expect(cut.text()).not.toContain(longHost);
    const wide = capture();
    await runQuery({ dataDir: t.dir, agent: 'wide', wide: true }, wide.out);
    expect(wide.text()).toContain(`${longHost}:443`);
  });

  it('a folded record shows how many identical denials it stands for', async () => {
    const folded = rec({ time: new Date().toISOString(), agent: 'folded', host: 'loop.example', verdict: 'deny', reason: 'method_not_allowed', rule: null, detail: { aggregated: { count: 523, until: new Date().toISOString() } } });
    store.write(folded);
    store.flush();
    const c = capture();
    await runQuery({ dataDir: t.dir, agent: 'folded' }, c.out);
    expect(c.text()).toMatch(/loop\.example:443\s+method_not_allowed x523\s/);
  });

  it('log tail: the header lines up with the rows it prints', async () => {
    const ac = new AbortController();
    const got = capture();
    const done = runTail({ dataDir: t.dir, agent: 'tailer' }, ac.signal, got.out, 20);
    await new Promise((r) => setTimeout(r, 150));
    const rows = [
      rec({ time: new Date().toISOString(), agent: 'tailer', host: 'a.example', rule: 'r' }),
      rec({ time: new Date().toISOString(), agent: 'tailer', host: 'a-much-longer-host-name.example.org', method: 'GET', port: 80, reason: 'no_rule', verdict: 'deny', rule: null }),
    ];
    for (const r of rows) store.write(r);
    store.flush();
    for (let i = 0; i < 100 && got.text().split('\n').length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await done;
    const [header, ...body] = got.text().trimEnd().split('\n');
    expect(body).toHaveLength(2);
    const starts = (l: string) => [...l.matchAll(/(?:^|\s{2})(\S)/g)].map((m) => m.index! + m[0].length - 1);
    for (const l of body) expect(starts(l)).toEqual(starts(header));
  });
});

describe('spike alerts', () => {
  it('are logged once per spike, with the window in one format', async () => {
    const lines: { msg: string; alert?: unknown }[] = [];
    const logger = pino(
      { level: 'info' },
      new Writable({
        write(chunk, _enc, cb) {
          for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
          cb();
        },
      }),
    );
    const p = await startTestProxy({ logger, alerts: { windowMs: 60_000, threshold: 5, multiplier: 1 } });
    try {
      for (let i = 0; i < 12; i++) expect(await rawExchange(p.port, `CONNECT blocked${i}.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`, 1000)).toMatch(/^HTTP\/1\.1 403/);
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      await p.close();
    }
    const spikes = lines.filter((l) => /deny spike/.test(l.msg));
    expect(spikes).toHaveLength(1);
    expect(spikes[0].msg).toMatch(/ in 60s$/);
  });
});
