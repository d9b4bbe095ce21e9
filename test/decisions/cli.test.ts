import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { Command } from 'commander';
import { Registry } from 'prom-client';
import { parse } from 'yaml';
import { registerLog, runQuery, runSummary, runTail, runVerify } from '../../src/cli/commands/log.js';
import { runSuggest } from '../../src/cli/commands/suggest.js';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import type { PolicyHolder } from '../../src/policy/holder.js';
import { rec, tempDir } from './helpers.js';

const t = tempDir('ae-cli-');
let store: SqliteDecisionStore;
let admin: AdminServer;
const now = Date.now();
const ago = (ms: number) => new Date(now - ms).toISOString();

beforeAll(async () => {
  // The store stays open as the proxy's would: the CLI reads the same file alongside it.
  store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
  store.write(rec({ time: ago(3 * 3_600_000), agent: 'old', host: 'old.example.com' }));
  store.write(rec({ time: ago(120_000), agent: 'bot', host: 'api.openai.com' }));
  store.write(rec({ time: ago(60_000), agent: 'bot', host: 'pastebin.com', verdict: 'deny', reason: 'no_rule', rule: null, status: 403 }));
  store.write(rec({ time: ago(30_000), agent: 'bot', host: 'pastebin.com', verdict: 'deny', reason: 'no_rule', rule: null, status: 403 }));
  store.flush();
  const policy = { state: () => { throw new Error('unused'); } } as unknown as PolicyHolder;
  admin = await startAdminServer({ listen: '127.0.0.1:0', token: 'tok', store, policy, metricsRegistry: new Registry(), ready: () => true, streamPollMs: 50 });
});
afterAll(async () => {
  await admin.close();
  await store.close();
  t.cleanup();
});

function capture() {
  const chunks: string[] = [];
  return { out: (s: string) => void chunks.push(s), text: () => chunks.join('') };
}

describe('log CLI', () => {
  it('query: table by default, newest first, filters; JSON lines with --json; same through --url', async () => {
    const c = capture();
    await runQuery({ dataDir: t.dir, decision: 'deny', since: '10m' }, c.out);
    const lines = c.text().trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+DECISION\s+AGENT\s+METHOD\s+DESTINATION\s+REASON/);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/deny\s+bot\s+CONNECT\s+pastebin\.com:443\s+no_rule/);

    const j = capture();
    await runQuery({ dataDir: t.dir, since: '1h', json: true }, j.out);
    const recs = j.text().trim().split('\n').map((l) => JSON.parse(l));
    expect(recs.map((r) => r.host)).toEqual(['pastebin.com', 'pastebin.com', 'api.openai.com']);

    const u = capture();
    await runQuery({ url: `http://127.0.0.1:${admin.port}`, token: 'tok', since: '1h', json: true, limit: '2' }, u.out);
    expect(u.text().trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(recs.slice(0, 2).map((r) => r.id));
    await expect(runQuery({ url: `http://127.0.0.1:${admin.port}`, token: 'wrong' }, u.out)).rejects.toThrow(/401/);
    await expect(runQuery({ dataDir: t.dir, since: 'last tuesday' }, u.out)).rejects.toThrow(/since/);
  });

  it('summary counts the denies and draws them over time', async () => {
    const c = capture();
    await runSummary({ dataDir: t.dir, since: '1h' }, c.out);
    const text = c.text();
    expect(text).toMatch(/total 3\s+allow 1\s+deny 2/);
    expect(text).toMatch(/2\s+pastebin\.com/);
    expect(text).toMatch(/2\s+no_rule/);
    expect(text).toMatch(/\|[ ▁▂▃▄▅▆▇█]+\|/);
    const u = capture();
    await runSummary({ url: `http://127.0.0.1:${admin.port}`, token: 'tok', since: '1h', json: true }, u.out);
    expect(JSON.parse(u.text()).totals).toEqual({ allow: 1, deny: 2 });
  });

  it('tail follows new decisions from the file and through the API', async () => {
    for (const src of [{ dataDir: t.dir }, { url: `http://127.0.0.1:${admin.port}`, token: 'tok' }]) {
      const ac = new AbortController();
      const fresh = rec({ agent: 'tailer', host: `tail-${Math.random().toString(36).slice(2)}.example`, verdict: 'deny', reason: 'no_rule', rule: null });
      const got: string[] = [];
      const done = runTail({ ...src, json: true, agent: 'tailer' }, ac.signal, (s) => {
        got.push(s);
        if (s.includes(fresh.host)) ac.abort();
      }, 20);
      // Keep writing until the follower has started and sees it (bounded).
      for (let i = 0; i < 100 && !ac.signal.aborted; i++) {
        if (i === 5) {
          store.write(fresh);
          store.flush();
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      ac.abort();
      await done;
      expect(got.map((l) => JSON.parse(l).id)).toEqual([fresh.id]);
    }
  });

  it('verify passes, then fails with exit code 1 after an edit (through commander)', async () => {
    const ok = capture();
    expect(await runVerify({ dataDir: t.dir }, ok.out)).toBe(true);
    expect(ok.text()).toMatch(/^ok: \d+ records verified/);
    const d2 = tempDir('ae-cli-verify-');
    try {
      const s = createSqliteStore({ dataDir: d2.dir });
      for (let i = 0; i < 5; i++) s.write(rec());
      await s.close();
      const db = new Database(s.file);
      db.prepare("UPDATE decisions SET json = replace(json, 'api.example.com', 'other.example.com') WHERE seq = 3").run();
      db.close();
      const program = new Command().exitOverride();
      registerLog(program);
      const before = process.exitCode;
      try {
        await program.parseAsync(['node', 'agent-egress', 'log', 'verify', '--data-dir', d2.dir, '--json']);
        expect(process.exitCode).toBe(1);
      } finally {
        process.exitCode = before;
      }
    } finally {
      d2.cleanup();
    }
  });

  it('policy suggest writes a policy from the recorded decisions', async () => {
    const c = capture();
    await runSuggest({ dataDir: t.dir, since: '1h', agent: 'bot' }, c.out);
    const doc = parse(c.text());
    // pastebin.com is a paste site: flagged in the comments, never proposed.
    expect(doc.rules.flatMap((r: { hosts: string[] }) => r.hosts).sort()).toEqual(['api.openai.com']);
    expect(c.text()).toMatch(/^# +! pastebin\.com:443/m);
    expect(c.text()).toMatch(/by agent bot/);
  });
});
