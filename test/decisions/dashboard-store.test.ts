import { afterEach, describe, expect, it } from 'vitest';
import { createSqliteStore, type SqliteDecisionStore } from '../../src/decisions/store/sqlite.js';
import { buildFilter, QueryError } from '../../src/decisions/query.js';
import { GENESIS_HASH } from '../../src/decisions/chain.js';
import { ruleSnippets } from '../../src/decisions/rule-snippet.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';
import { parse } from 'yaml';
import { rec, tempDir } from './helpers.js';

let store: SqliteDecisionStore | null = null;
const dirs: { cleanup: () => void }[] = [];
function open(): SqliteDecisionStore {
  const t = tempDir('ae-dash-store-');
  dirs.push(t);
  store = createSqliteStore({ dataDir: t.dir, repeats: false });
  return store;
}
afterEach(async () => {
  await store?.close();
  store = null;
  for (const d of dirs.splice(0)) d.cleanup();
});

describe('store reads for the dashboard', () => {
  it('filters on the method (exact, any case given), refusing a malformed one', async () => {
    const s = open();
    s.write(rec({ method: 'CONNECT', host: 'a.example' }));
    s.write(rec({ method: 'GET', host: 'b.example' }));
    s.write(rec({ method: 'DNS', host: 'c.example', port: null }));
    s.flush();
    expect((await s.query(buildFilter({ method: 'get' }))).records.map((r) => r.host)).toEqual(['b.example']);
    expect((await s.query(buildFilter({ method: 'CONNECT' }))).records.map((r) => r.host)).toEqual(['a.example']);
    expect((await s.summary(buildFilter({ method: 'DNS' }))).totals).toEqual({ allow: 1, deny: 0 });
    expect(() => buildFilter({ method: 'GET /x' })).toThrow(QueryError);
    expect(() => buildFilter({ method: '' })).toThrow(/method/);
  });

  it('counts allowed and denied decisions per time bucket', async () => {
    const s = open();
    const t0 = Date.parse('2025-06-01T10:00:00Z');
    const at = (ms: number, verdict: 'allow' | 'deny') => rec({ time: new Date(t0 + ms).toISOString(), verdict, reason: verdict === 'deny' ? 'no_rule' : 'rule_allow' });
    for (const r of [at(1_000, 'allow'), at(59_000, 'deny'), at(59_999, 'deny'), at(60_000, 'allow'), at(185_000, 'deny')]) s.write(r);
    s.flush();
    expect(await s.timeline({ sinceMs: t0 }, 60_000)).toEqual([
      { t: t0, allow: 1, deny: 2 },
      { t: t0 + 60_000, allow: 1, deny: 0 },
      { t: t0 + 180_000, allow: 0, deny: 1 },
    ]);
    expect(await s.timeline({ sinceMs: t0, verdict: 'deny' }, 3_600_000)).toEqual([{ t: t0, allow: 0, deny: 3 }]);
  });

  it("gives a record's place in the hash chain: seq, hash, and the previous row's hash", async () => {
    const s = open();
    const recs = [rec(), rec(), rec()];
    for (const r of recs) s.write(r);
    s.flush();
    const p = await Promise.all(recs.map((r) => s.chainPosition(r.id)));
    expect(p[0]).toMatchObject({ seq: 1, prev: GENESIS_HASH, headSeq: 3 });
    expect(p[1]!.prev).toBe(p[0]!.hash);
    expect(p[2]!.prev).toBe(p[1]!.hash);
    expect(p[2]).toMatchObject({ seq: 3, hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await s.chainPosition('nope')).toBeNull();
    expect((await s.verify()).ok).toBe(true);
  });

  it('serves every page from an index, seeking to the cursor (no scan from the newest row, no sort)', async () => {
    const s = open();
    for (let i = 0; i < 50; i++) s.write(rec({ verdict: i % 2 ? 'deny' : 'allow', reason: i % 2 ? 'no_rule' : 'rule_allow', agent: `a${i % 3}` }));
    s.flush();
    const first = await s.query({ limit: 10 });
    const cursor = first.nextCursor!;
    const cases: [Parameters<SqliteDecisionStore['query']>[0], RegExp][] = [
      [{ cursor }, /USING (COVERING )?INDEX decisions_time \(time_ms<\?\)/],
      [{ cursor, verdict: 'deny' }, /USING (COVERING )?INDEX decisions_verdict_time \(verdict=\? AND time_ms<\?\)/],
      [{ cursor, agent: 'a1' }, /USING (COVERING )?INDEX decisions_agent_time \(agent=\? AND time_ms<\?\)/],
      [{ cursor, host: '*.example.com', method: 'GET' }, /USING (COVERING )?INDEX decisions_time \(time_ms<\?\)/],
      [{ sinceMs: 1 }, /USING (COVERING )?INDEX decisions_time \(time_ms>\?\)/],
      [{}, /SCAN decisions USING (COVERING )?INDEX decisions_time/],
    ];
    for (const [f, want] of cases) {
      const plan = s.explainQuery(f).join(' | ');
      expect(plan, JSON.stringify(f)).toMatch(want);
      expect(plan, JSON.stringify(f)).not.toMatch(/TEMP B-TREE/);
    }
    // And the pages are right: newest first, no row twice, none skipped.
    const seen: string[] = [];
    let c: string | null = null;
    let pages = 0;
    do {
      const page = await s.query({ limit: 7, ...(c ? { cursor: c } : {}) });
      seen.push(...page.records.map((r) => r.id));
      c = page.nextCursor;
      pages++;
    } while (c);
    expect(pages).toBe(8);
    expect(new Set(seen).size).toBe(50);
  });
});

describe('ready-to-paste rules for one record', () => {
  const load = (rules: string) => compilePolicy(parsePolicyText(`version: 1\nrules:\n${rules.replace(/^/gm, '  ')}`, 'snippet.yaml'));

  it('an allow and a deny rule that load, and decide the record as they say', () => {
    const r = rec({ host: 'api.newthing.dev', port: 8443, verdict: 'deny', reason: 'no_rule', rule: null });
    const s = ruleSnippets(r);
    expect(s.allow).not.toBeNull();
    const host = normalizeHost('api.newthing.dev');
    expect(load(s.allow!).decide({ agent: null, host, port: 8443 }).verdict).toBe('allow');
    expect(load(s.deny!).decide({ agent: null, host, port: 8443 }).verdict).toBe('deny');
    expect(parse(s.deny!)).toEqual([{ name: 'deny-api.newthing.dev', action: 'deny', hosts: ['api.newthing.dev'], ports: [8443] }]);
    const ip = ruleSnippets(rec({ host: '203.0.113.7', port: 443, verdict: 'deny', reason: 'no_rule', rule: null }));
    expect(parse(ip.deny!)[0].cidrs).toEqual(['203.0.113.7/32']);
  });

  it('no allow rule where policy suggest would refuse one (guarded address, internal name), with why; none at all for an invalid host', () => {
    const priv = ruleSnippets(rec({ host: '10.0.0.5', port: 80, verdict: 'deny', reason: 'private_address', rule: null }));
    expect(priv.allow).toBeNull();
    expect(priv.allowWhy).toMatch(/address guard/);
    expect(priv.deny).not.toBeNull();
    const internal = ruleSnippets(rec({ host: 'db.internal', verdict: 'deny', reason: 'no_rule', rule: null }));
    expect(internal.allow).toBeNull();
    expect(internal.allowWhy).toMatch(/internal/);
    const bad = ruleSnippets(rec({ host: '<img src=x onerror=alert(1)>', verdict: 'deny', reason: 'bad_request', rule: null }));
    expect(bad).toMatchObject({ allow: null, deny: null });
  });
});
