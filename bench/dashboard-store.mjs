import Database from 'better-sqlite3';
import { createSqliteStore } from '../dist/decisions/store/sqlite.js';
import { mkdtempSync } from 'node:fs';
const dir = mkdtempSync('/tmp/plan-');
const s = createSqliteStore({ dataDir: dir });
s.open();
const db = new Database(dir + '/decisions.sqlite');
const N = Number(process.argv[2] || 1000000);
const ins = db.prepare('INSERT INTO decisions (id, time_ms, verdict, agent, host, reason, rule, json, hash, weight) VALUES (?,?,?,?,?,?,?,?,?,1)');
let t0 = Date.now();
db.transaction(() => {
  for (let i = 0; i < N; i++) {
    const deny = i % 7 === 0;
    const rec = { id: 'id' + i, time: new Date(1.7e12 + i * 100).toISOString(), agent: 'agent-' + (i % 20), method: i % 3 ? 'CONNECT' : 'GET', host: `h${i % 5000}.example.com`, port: 443, verdict: deny ? 'deny' : 'allow', reason: deny ? 'no_rule' : 'rule_allow', rule: deny ? null : 'r1' };
    ins.run(rec.id, 1.7e12 + i * 100, rec.verdict, rec.agent, rec.host, rec.reason, rec.rule, JSON.stringify(rec), 'h', );
  }
})();
console.log('insert', Date.now() - t0);
const time = async (label, f) => { const t = process.hrtime.bigint(); const r = await f(); console.log(label, Number(process.hrtime.bigint() - t) / 1e6, 'ms', r.records?.length ?? r.length); return r; };
let p = await time('first page', () => s.query({ limit: 100 }));
for (let i = 0; i < 5; i++) p = await s.query({ limit: 1000, cursor: p.nextCursor });
await time('page after 5100', () => s.query({ limit: 100, cursor: p.nextCursor }));
const mid = Buffer.from(`${1.7e12 + 500000 * 100}:500000`).toString('base64url');
await time('page at middle', () => s.query({ limit: 100, cursor: mid }));
await time('deny page at middle', () => s.query({ limit: 100, cursor: mid, verdict: 'deny' }));
await time('agent page middle', () => s.query({ limit: 100, cursor: mid, agent: 'agent-3' }));
await time('host glob', () => s.query({ limit: 100, host: '*.example.com' }));
await time('method GET', () => s.query({ limit: 100, method: 'GET' }));
await time('timeline 1h', () => s.timeline({ sinceMs: 1.7e12 + N * 100 - 3600000 }, 30000));
await time('timeline all', () => s.timeline({}, 3600000));
await time('summary 1h', async () => { const x = await s.summary({ sinceMs: 1.7e12 + N * 100 - 3600000 }); return [x]; });
await time('chain', async () => [await s.chainPosition('id500000')]);
for (const sql of ["SELECT seq FROM decisions WHERE time_ms <= 1 AND (time_ms < 1 OR seq < 1) ORDER BY time_ms DESC, seq DESC LIMIT 10",
  "SELECT seq FROM decisions WHERE verdict='deny' AND time_ms <= 1 AND (time_ms < 1 OR seq < 1) ORDER BY time_ms DESC, seq DESC LIMIT 10",
  "SELECT id FROM decisions WHERE id = 'x'"]) console.log(sql, db.prepare('EXPLAIN QUERY PLAN ' + sql).all().map(r => r.detail));
