import { describe, expect, it } from 'vitest';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SpikeDetector, type SpikeAlert } from '../../src/decisions/alerts.js';
import { connectionUrl, parseStoreLocation, pgpassLookup, redactStoreUrl, StoreUrlError } from '../../src/decisions/store/location.js';
import { Spool } from '../../src/decisions/store/spool.js';
import { globToLike, whereSql, type SqlDialect } from '../../src/decisions/store/sql-filter.js';
import { rec, tempDir } from '../decisions/helpers.js';

describe('--store URLs', () => {
  it('parses sqlite: and postgres:// locations, refuses anything else with a redacted message', () => {
    expect(parseStoreLocation(undefined, '/srv/data')).toMatchObject({ kind: 'sqlite', file: '/srv/data/decisions.sqlite' });
    expect(parseStoreLocation('sqlite:/tmp/x.sqlite', '/srv/data')).toMatchObject({ kind: 'sqlite', file: '/tmp/x.sqlite' });
    expect(parseStoreLocation('postgresql://u@db:5432/egress?sslmode=verify-full', '.')).toMatchObject({ kind: 'postgres', display: 'postgresql://u@db:5432/egress?sslmode=verify-full' });
    expect(() => parseStoreLocation('mysql://u:hunter2@db/x', '.')).toThrow(StoreUrlError);
    expect(() => parseStoreLocation('mysql://u:hunter2@db/x', '.')).toThrow(/u:\*\*\*@db/);
    expect(() => parseStoreLocation('postgres://u:hunter2@db', '.')).toThrow(/database name/);
    expect(() => parseStoreLocation('postgres://u@db/x?sslmode=maybe', '.')).toThrow(/sslmode/);
  });

  it('redacts a password in the userinfo and in a password= parameter', () => {
    expect(redactStoreUrl('postgres://egress:s3cr%40t@db:5432/e')).toBe('postgres://egress:***@db:5432/e');
    expect(redactStoreUrl('postgres://db/e?user=x&password=s3cret&sslmode=require')).toBe('postgres://db/e?user=x&password=***&sslmode=require');
    expect(redactStoreUrl('postgres://egress@db/e')).toBe('postgres://egress@db/e');
  });

  it('takes the password from the URL, the password file, PGPASSWORD, then PGPASSFILE, in that order', () => {
    const t = tempDir('ae-loc-');
    try {
      const pwFile = path.join(t.dir, 'pw');
      writeFileSync(pwFile, 'from-file\nignored\n');
      const pass = path.join(t.dir, 'pgpass');
      writeFileSync(pass, '# comment\nother:5432:*:*:nope\ndb:5433:egress:egress:from\\:pgpass\n*:*:*:*:wild\n');
      const loc = (url: string, file?: string) => parseStoreLocation(url, '.', file) as Extract<ReturnType<typeof parseStoreLocation>, { kind: 'postgres' }>;
      expect(connectionUrl(loc('postgres://egress:inline@db:5433/egress', pwFile), { PGPASSWORD: 'env' }).password).toBe('inline');
      expect(connectionUrl(loc('postgres://egress@db:5433/egress', pwFile), { PGPASSWORD: 'env' }).password).toBe('from-file');
      expect(connectionUrl(loc('postgres://egress@db:5433/egress'), { PGPASSWORD: 'env', PGPASSFILE: pass }).password).toBe('env');
      const viaPass = connectionUrl(loc('postgres://egress@db:5433/egress'), { PGPASSFILE: pass });
      expect(viaPass.password).toBe('from:pgpass');
      expect(new URL(viaPass.url).password).toBe(encodeURIComponent('from:pgpass'));
      expect(pgpassLookup(new URL('postgres://x@elsewhere/y'), { PGPASSFILE: pass })).toBe('wild');
      expect(() => parseStoreLocation('postgres://egress@db/e', '.', path.join(t.dir, 'missing'))).toThrow(/--store-password-file .*ENOENT/);
    } finally {
      t.cleanup();
    }
  });
});

describe('one filter for every SQL backend', () => {
  it('numbers placeholders in order after the extra conditions, and turns globs into LIKE patterns', () => {
    const pg: SqlDialect = { placeholder: (n) => `$${n}`, glob: (c, g, b) => `${c} LIKE ${b(globToLike(g))}` };
    const w = whereSql({ sinceMs: 5, verdict: 'deny', host: 'API.*', path: '/a_%' }, pg, [(b) => `gseq > ${b(7)}`]);
    expect(w.sql).toBe('WHERE gseq > $1 AND time_ms >= $2 AND verdict = $3 AND path LIKE $4 AND host LIKE $5');
    expect(w.params).toEqual([7, 5, 'deny', '/a\\_\\%', 'api.%']);
    expect(globToLike('a?b*\\')).toBe('a_b%\\\\');
  });
});

describe('the spool file', () => {
  it('delivers oldest first across appends, remembers its position, and cuts a torn last line', async () => {
    const t = tempDir('ae-spool-');
    try {
      const file = path.join(t.dir, 's.jsonl');
      const s = new Spool(file);
      const recs = Array.from({ length: 7 }, () => rec());
      await s.append(recs.slice(0, 4).map((r, i) => ({ rec: r, storedMs: 100 + i, at: 0 })));
      await s.append(recs.slice(4).map((r, i) => ({ rec: r, storedMs: 200 + i, at: 0 })));
      expect(s.count).toBe(7);
      const first = await s.read(3);
      expect(first.items.map((q) => q.rec.id)).toEqual(recs.slice(0, 3).map((r) => r.id));
      await s.commit(first.end, 3);
      // A crash mid-append leaves half a line; the next open cuts it and continues after the committed part.
      appendFileSync(file, '{"t":999,"r":{"id":"torn');
      const again = new Spool(file);
      expect(again.count).toBe(4);
      expect(again.newestStoredMs).toBe(202);
      const rest = await again.read(100);
      expect(rest.items.map((q) => q.rec.id)).toEqual(recs.slice(3).map((r) => r.id));
      expect(rest.items.map((q) => q.storedMs)).toEqual([103, 200, 201, 202]);
      await again.commit(rest.end, 4);
      expect(again.count).toBe(0);
      expect(() => readFileSync(file)).toThrow(/ENOENT/);
    } finally {
      t.cleanup();
    }
  });
  it('creates a missing data directory on its first append (a PostgreSQL store never creates it otherwise)', async () => {
    const t = tempDir('ae-spool-');
    try {
      const file = path.join(t.dir, 'not', 'yet', 'spool.jsonl');
      const s = new Spool(file);
      await s.append([{ rec: rec(), storedMs: 1, at: 0 }]);
      expect(s.count).toBe(1);
      expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(1);
    } finally {
      t.cleanup();
    }
  });
});

describe('SpikeDetector over stored records', () => {
  it('counts a folded record by the denials it stands for', () => {
    const alerts: SpikeAlert[] = [];
    const d = new SpikeDetector({ threshold: 20, windowMs: 10_000, onAlert: (a) => alerts.push(a) });
    const t = Date.parse('2025-06-01T00:00:00Z');
    for (let i = 0; i < 10; i++) d.write(rec({ time: new Date(t + i).toISOString(), verdict: 'deny', reason: 'no_rule', agent: 'loop' }));
    expect(alerts).toHaveLength(0);
    d.write(rec({ time: new Date(t + 20).toISOString(), verdict: 'deny', reason: 'no_rule', agent: 'loop', detail: { aggregated: { count: 15, until: new Date(t + 900).toISOString() } } }));
    expect(alerts).toHaveLength(1);
    expect(alerts[0].denies).toBe(25);
    expect(alerts[0].topDestinations[0].count).toBe(25);
  });
});
