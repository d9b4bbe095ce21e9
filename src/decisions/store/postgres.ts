import pg from 'pg';
import { getDomain } from 'tldts';
import { FAILURE_REASONS, weightOf, type DecisionRecord } from '../record.js';
import { DEFAULT_LIMIT, MAX_LIMIT, type QueryFilter } from '../query.js';
import { GENESIS_HASH, verifyChain, type ChainRow, type VerifyResult } from '../chain.js';
import type { Summary } from '../summary.js';
import { decodeCursor, decodeTailCursor, encodeCursor } from './cursor.js';
import { connectionUrl, scrubSecret, type StoreLocation } from './location.js';
import { DAY_MS, LOCK, LOCK_NS, SchemaError, currentVersion, dayOf, dropPartitionsBefore, ensurePartitions, migrate } from './pg-schema.js';
import { SqlParams, globToLike, whereSql, type SqlDialect } from './sql-filter.js';
import { StoreUnavailableError, type ChainPosition, type DecisionStore, type QueryPage, type ReplicaVerifyResult, type StoreStats, type TailPage, type TimelineBucket } from './types.js';
import { ChainWriter, type ChainBackend, type ChainHead, type ChainWriterOptions, type SealedRow } from './writer.js';

type PgLocation = Extract<StoreLocation, { kind: 'postgres' }>;

const PG: SqlDialect = {
  placeholder: (n) => `$${n}`,
  // LIKE's default escape is `\`; a prefix pattern (`api.*`) is served by the text_pattern_ops index.
  glob: (column, glob, bind) => `${column} LIKE ${bind(globToLike(glob))}`,
  field: (name) => `(json::jsonb ->> '${name}')`,
};

const FAILURES = FAILURE_REASONS.map((r) => `'${r}'`).join(', ');
const VERIFY_CHUNK = 5000;

export interface PostgresStoreOptions {
  /** Present for `serve`: this process writes as this replica. Absent for readers. */
  writer?: Omit<ChainWriterOptions, 'display' | 'scrub'>;
  logger?: ChainWriterOptions['logger'];
  /** Pool size. Default 4 for a writer, 2 for a reader. */
  maxConnections?: number;
  /** Per-query bound, so a slow database delays the writer (which then spools), never a caller. Default 10 s. */
  queryTimeoutMs?: number;
  connectTimeoutMs?: number;
}

/** The secrets a driver message could carry: the password itself, and as it is spelled in a URL. */
function secretsOf(password: string | undefined): string[] {
  return password ? [password, encodeURIComponent(password)] : [];
}

/**
 * The PostgreSQL decision store: the shared writer (chain per replica, spool) over a partitioned table,
 * and the read side for the CLI, the API and the alerts, fleet-wide (every replica's records).
 */
export class PostgresDecisionStore implements DecisionStore, ChainBackend {
  readonly display: string;
  private readonly pool: pg.Pool;
  private readonly writer: ChainWriter | null;
  private ready: Promise<void> | null = null;
  private knownDays = new Set<number>();
  private leader: pg.Client | null = null;
  private readonly secrets: string[];
  private readonly connectUrl: string;

  constructor(
    loc: PgLocation,
    opts: PostgresStoreOptions = {},
  ) {
    this.display = loc.display;
    const conn = connectionUrl(loc);
    this.connectUrl = conn.url;
    this.secrets = secretsOf(conn.password);
    const timeout = opts.queryTimeoutMs ?? 10_000;
    this.pool = new pg.Pool({
      connectionString: conn.url,
      max: opts.maxConnections ?? (opts.writer ? 4 : 2),
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 3_000,
      query_timeout: timeout,
      statement_timeout: timeout,
      idleTimeoutMillis: 10_000,
      application_name: opts.writer ? `agent-egress ${opts.writer.replica}` : 'agent-egress reader',
    });
    // An idle connection dropped by the server (restart, failover) must not crash the proxy.
    this.pool.on('error', () => undefined);
    this.writer = opts.writer ? new ChainWriter(this, { ...opts.writer, display: loc.display, scrub: (s) => this.scrub(s), logger: opts.logger }) : null;
  }

  scrub(text: string): string {
    let t = text;
    for (const s of this.secrets) t = scrubSecret(t, s);
    return t;
  }

  /** A driver error as this store reports it: the redacted URL, never the password. */
  private unavailable(err: unknown): StoreUnavailableError {
    if (err instanceof StoreUnavailableError) return err;
    const msg = this.scrub((err as Error).message || String((err as { code?: string }).code ?? err));
    return new StoreUnavailableError(`decision store ${this.display}: ${msg}`);
  }

  private async withClient<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw this.unavailable(err);
    }
    let broken = false;
    // A connection that dies while checked out emits 'error' on the client (besides failing the query):
    // unhandled, that would end the process.
    const onError = () => {
      broken = true;
    };
    c.on('error', onError);
    try {
      return await fn(c);
    } catch (err) {
      broken ||= !(err instanceof pg.DatabaseError);
      throw err;
    } finally {
      c.off('error', onError);
      c.release(broken);
    }
  }

  /** Readers: fail now, with one clear line, if the server or the schema is not there. */
  async checkReadable(): Promise<void> {
    try {
      await this.withClient(async (c) => {
        const v = await currentVersion(c);
        if (v === null || v === 0) throw new SchemaError('no decisions here yet (serve --store creates the schema on its first start)');
      });
    } catch (err) {
      throw this.unavailable(err);
    }
  }

  private ensureReady(c: pg.PoolClient): Promise<void> {
    this.ready ??= (async () => {
      await migrate(c);
      const today = dayOf(Date.now());
      await this.ensureDays(c, [today, today + DAY_MS, today + 2 * DAY_MS]);
    })().catch((err) => {
      this.ready = null;
      throw err;
    });
    return this.ready;
  }

  private async ensureDays(c: pg.PoolClient, days: number[]): Promise<void> {
    const missing = days.filter((d) => !this.knownDays.has(d));
    if (!missing.length) return;
    await ensurePartitions(c, missing);
    for (const d of missing) this.knownDays.add(d);
  }

  // ---- ChainBackend ----

  async head(replica: string): Promise<ChainHead> {
    return this.withClient(async (c) => {
      await this.ensureReady(c);
      const r = await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM decisions WHERE replica = $1 ORDER BY seq DESC LIMIT 1', [replica]);
      const row = r.rows[0] ?? (await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM decision_anchors WHERE replica = $1', [replica])).rows[0];
      return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS_HASH };
    });
  }

  async append(rows: SealedRow[]): Promise<Set<string>> {
    return this.withClient(async (c) => {
      await this.ensureReady(c);
      await this.ensureDays(c, [...new Set(rows.map((r) => dayOf(r.storedMs)))]);
      const cols: unknown[][] = Array.from({ length: 14 }, () => []);
      for (const r of rows) {
        const rec = r.rec;
        const t = Date.parse(rec.time);
        const v = [r.storedMs, rec.id, r.replica, r.seq, Number.isFinite(t) ? t : 0, rec.verdict, rec.agent ?? null, rec.host, rec.reason, rec.rule ?? null, rec.path ?? null, weightOf(rec), r.json, r.hash];
        for (let i = 0; i < 14; i++) cols[i].push(v[i]);
      }
      await c.query('BEGIN');
      try {
        // Commits in gseq order across replicas, so a tail cursor (gseq) never skips a late commit.
        await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK.commitOrder]);
        const res = await c.query<{ id: string }>(
          `INSERT INTO decisions (stored_ms, id, replica, seq, time_ms, verdict, agent, host, reason, rule, path, weight, json, hash)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[],
                                $9::text[], $10::text[], $11::text[], $12::int[], $13::text[], $14::text[])
           ON CONFLICT DO NOTHING RETURNING id`,
          cols,
        );
        if (res.rows.length === rows.length) {
          await c.query('COMMIT');
          return new Set<string>();
        }
        await c.query('ROLLBACK');
        const inserted = new Set(res.rows.map((r) => r.id));
        return new Set(rows.filter((r) => !inserted.has(r.rec.id)).map((r) => r.rec.id));
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        // A partition retention dropped meanwhile (a spooled record from an old day): make it again next time.
        if ((err as { code?: string }).code === '23514') this.knownDays.clear();
        throw err;
      }
    });
  }

  async maintain(now: number, maxAgeMs: number | undefined): Promise<number> {
    return this.withClient(async (c) => {
      await this.ensureReady(c);
      const today = dayOf(now);
      await this.ensureDays(c, [today, today + DAY_MS, today + 2 * DAY_MS]);
      if (!maxAgeMs) return 0;
      const dropped = await dropPartitionsBefore(c, now - maxAgeMs);
      if (dropped) this.knownDays = new Set([...this.knownDays].filter((d) => d + DAY_MS > now - maxAgeMs));
      return dropped;
    });
  }

  // ---- DecisionSink (the writer) ----

  write(record: DecisionRecord): void {
    this.writer?.write(record);
  }

  /** Run partition upkeep and retention now (the writer also runs it on a timer). */
  runMaintenance(): Promise<void> {
    return this.writer?.runMaintenance() ?? Promise.resolve();
  }

  /** Deliver what waits now (tests). */
  flushNow(): Promise<void> {
    return this.writer?.pump() ?? Promise.resolve();
  }

  async close(): Promise<void> {
    await this.writer?.close();
    const l = this.leader;
    this.leader = null;
    await l?.end().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }

  stats(): StoreStats {
    return this.writer?.stats() ?? { pending: 0, dropped: 0, written: 0, lagMs: 0, failing: false, retained: 0, spooled: 0, degraded: false };
  }

  onStored(fn: () => void): () => void {
    return this.writer?.onStored(fn) ?? (() => undefined);
  }

  // ---- read side (every replica) ----

  private async read<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return await this.withClient(fn);
    } catch (err) {
      if ((err as Error).name === 'CursorError' || (err as Error).name === 'QueryError') throw err;
      throw this.unavailable(err);
    }
  }

  /** `since` on the decision time bounds the partition key too (a record is stored after it is made). */
  private where(f: QueryFilter, extra: ((b: (v: unknown) => string) => string)[] = [], params?: SqlParams) {
    const prune = f.sinceMs !== undefined ? [(b: (v: unknown) => string) => `stored_ms >= ${b(f.sinceMs)}`] : [];
    return whereSql(f, PG, [...extra, ...prune], params);
  }

  async query(f: QueryFilter): Promise<QueryPage> {
    const limit = Math.min(f.limit ?? DEFAULT_LIMIT, MAX_LIMIT);
    const extra: ((b: (v: unknown) => string) => string)[] = [];
    if (f.cursor) {
      const c = decodeCursor(f.cursor);
      extra.push((b) => `(time_ms < ${b(c.timeMs)} OR (time_ms = ${b(c.timeMs)} AND gseq < ${b(c.seq)}))`);
    }
    const w = this.where(f, extra);
    const rows = await this.read((c) =>
      c.query<{ gseq: string; time_ms: string; json: string }>(`SELECT gseq, time_ms, json FROM decisions ${w.sql} ORDER BY time_ms DESC, gseq DESC LIMIT ${limit + 1}`, w.params),
    );
    const more = rows.rows.length > limit;
    const page = more ? rows.rows.slice(0, limit) : rows.rows;
    const last = page[page.length - 1];
    return {
      records: page.map((r) => JSON.parse(r.json) as DecisionRecord),
      nextCursor: more && last ? encodeCursor(Number(last.time_ms), Number(last.gseq)) : null,
    };
  }

  async *iterateJson(f: QueryFilter, limit?: number): AsyncGenerator<string> {
    let cursor: { timeMs: number; gseq: number } | null = null;
    let n = 0;
    while (!limit || n < limit) {
      const page = Math.min(1000, limit ? limit - n : 1000);
      const extra: ((b: (v: unknown) => string) => string)[] = [];
      const at = cursor;
      if (at) extra.push((b) => `(time_ms < ${b(at.timeMs)} OR (time_ms = ${b(at.timeMs)} AND gseq < ${b(at.gseq)}))`);
      const w = this.where(f, extra);
      const rows = await this.read((c) => c.query<{ gseq: string; time_ms: string; json: string }>(`SELECT gseq, time_ms, json FROM decisions ${w.sql} ORDER BY time_ms DESC, gseq DESC LIMIT ${page}`, w.params));
      for (const r of rows.rows) yield r.json;
      n += rows.rows.length;
      if (rows.rows.length < page) return;
      const last = rows.rows[rows.rows.length - 1];
      cursor = { timeMs: Number(last.time_ms), gseq: Number(last.gseq) };
    }
  }

  async get(id: string): Promise<DecisionRecord | null> {
    const r = await this.read((c) => c.query<{ json: string }>('SELECT json FROM decisions WHERE id = $1 LIMIT 1', [id]));
    return r.rows[0] ? (JSON.parse(r.rows[0].json) as DecisionRecord) : null;
  }

  /** Where a record sits in its replica's chain (each replica has its own). */
  async chainPosition(id: string): Promise<ChainPosition | null> {
    return this.read(async (c) => {
      const row = (await c.query<{ replica: string; seq: string; hash: string }>('SELECT replica, seq, hash FROM decisions WHERE id = $1 ORDER BY seq LIMIT 1', [id])).rows[0];
      if (!row) return null;
      const before = (await c.query<{ hash: string }>('SELECT hash FROM decisions WHERE replica = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1', [row.replica, row.seq])).rows[0];
      const anchor = (await c.query<{ hash: string }>('SELECT hash FROM decision_anchors WHERE replica = $1', [row.replica])).rows[0];
      const head = (await c.query<{ h: string }>('SELECT max(seq) AS h FROM decisions WHERE replica = $1', [row.replica])).rows[0];
      return { seq: Number(row.seq), hash: row.hash, prev: before?.hash ?? anchor?.hash ?? GENESIS_HASH, headSeq: Number(head.h), replica: row.replica };
    });
  }

  /** Allowed and denied decisions per time bucket, ascending; empty buckets omitted. */
  async timeline(f: QueryFilter, bucketMs: number): Promise<TimelineBucket[]> {
    const b = Math.max(1, Math.trunc(bucketMs));
    const w = this.where(f);
    const rows = await this.read((c) =>
      c.query<{ t: string; allow: string; deny: string }>(
        `SELECT (time_ms / ${b}) * ${b} AS t, sum(CASE WHEN verdict = 'allow' THEN weight ELSE 0 END) AS allow, sum(CASE WHEN verdict = 'deny' THEN weight ELSE 0 END) AS deny FROM decisions ${w.sql} GROUP BY t ORDER BY t LIMIT 10000`,
        w.params,
      ),
    );
    return rows.rows.map((r) => ({ t: Number(r.t), allow: Number(r.allow), deny: Number(r.deny) }));
  }

  async summary(f: QueryFilter): Promise<Summary> {
    // bigint sums arrive as strings.
    const num = <R>(rows: Record<string, unknown>[], ...keys: string[]): R[] =>
      rows.map((r) => {
        const o: Record<string, unknown> = { ...r };
        for (const k of keys) o[k] = Number(r[k]);
        return o as R;
      });
    return this.read(async (c) => {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const run = async <T extends Record<string, unknown>>(select: string, tail: string, fixed: string[]) => {
          const w = this.where(f, fixed.map((s) => () => s));
          return (await c.query<T>(`${select} FROM decisions ${w.sql} ${tail}`, w.params)).rows;
        };
        const deny = ["verdict = 'deny'"];
        const policyDeny = [...deny, `reason NOT IN (${FAILURES})`];
        const totals = { allow: 0, deny: 0 };
        for (const r of await run<{ verdict: string; n: string }>('SELECT verdict, sum(weight) AS n', 'GROUP BY verdict', [])) {
          if (r.verdict === 'allow' || r.verdict === 'deny') totals[r.verdict] = Number(r.n);
        }
        const errorsByReason = num<{ reason: string; count: number }>(await run<{ reason: string; count: string }>('SELECT reason, sum(weight) AS count', 'GROUP BY reason ORDER BY count DESC, reason', [`reason IN (${FAILURES})`]), 'count');
        const topDeniedHosts = num<{ host: string; count: number }>(await run<{ host: string; count: string }>('SELECT host, sum(weight) AS count', 'GROUP BY host ORDER BY count DESC, host LIMIT 10', policyDeny), 'count');
        // Registrable domains need the public suffix list: grouped here from per-host counts (bounded).
        const perHost = await run<{ host: string; count: string }>('SELECT host, sum(weight) AS count', 'GROUP BY host ORDER BY count DESC LIMIT 100000', policyDeny);
        const domains = new Map<string, { domain: string; count: number; hosts: number }>();
        for (const h of perHost) {
          const d = getDomain(h.host, { allowPrivateDomains: true }) ?? h.host;
          const e = domains.get(d) ?? { domain: d, count: 0, hosts: 0 };
          e.count += Number(h.count);
          e.hosts++;
          domains.set(d, e);
        }
        const topDeniedDomains = [...domains.values()].sort((a, b) => b.count - a.count || (a.domain < b.domain ? -1 : 1)).slice(0, 10);
        const topAgents = num<{ agent: string | null; count: number; denies: number }>(
          await run<{ agent: string | null; count: string; denies: string }>("SELECT agent, sum(weight) AS count, sum(CASE WHEN verdict = 'deny' THEN weight ELSE 0 END) AS denies", 'GROUP BY agent ORDER BY count DESC LIMIT 10', []),
          'count',
          'denies',
        );
        const deniesByReason = num<{ reason: string; count: number }>(await run<{ reason: string; count: string }>('SELECT reason, sum(weight) AS count', 'GROUP BY reason ORDER BY count DESC, reason', deny), 'count');
        const deniesPerMinute = num<{ minute: number; count: number }>(await run<{ minute: string; count: string }>('SELECT (time_ms / 60000) * 60000 AS minute, sum(weight) AS count', 'GROUP BY minute ORDER BY minute LIMIT 100000', deny), 'minute', 'count');
        await c.query('COMMIT');
        return { sinceMs: f.sinceMs ?? null, untilMs: f.untilMs ?? null, totals, errorsByReason, topDeniedHosts, topDeniedDomains, topAgents, deniesByReason, deniesPerMinute };
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async tailAfter(cursor: string | null, f: QueryFilter = {}, limit = 500): Promise<TailPage> {
    const from = cursor === null ? null : decodeTailCursor(cursor);
    return this.read(async (c) => {
      const head = Number((await c.query<{ h: string }>('SELECT coalesce(max(gseq), 0) AS h FROM decisions')).rows[0].h);
      if (from === null) return { records: [], cursor: String(head) };
      const w = whereSql({ ...f, cursor: undefined, limit: undefined }, PG, [(b) => `gseq > ${b(from)}`, (b) => `gseq <= ${b(head)}`]);
      const rows = (await c.query<{ gseq: string; json: string }>(`SELECT gseq, json FROM decisions ${w.sql} ORDER BY gseq LIMIT ${Math.max(1, Math.min(limit, 5000))}`, w.params)).rows;
      const next = rows.length === limit ? Number(rows[rows.length - 1].gseq) : head;
      return { records: rows.map((r) => JSON.parse(r.json) as DecisionRecord), cursor: String(next) };
    });
  }

  /** Every replica's chain, each from its anchor (or the row before `since`). */
  async verify(opts: { sinceMs?: number } = {}): Promise<VerifyResult & { replicas: ReplicaVerifyResult[] }> {
    return this.read(async (c) => {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const names = (
          await c.query<{ replica: string }>(
            `WITH RECURSIVE r AS (
               (SELECT replica FROM decisions ORDER BY replica LIMIT 1)
               UNION ALL
               SELECT (SELECT replica FROM decisions WHERE replica > r.replica ORDER BY replica LIMIT 1) FROM r WHERE r.replica IS NOT NULL)
             SELECT replica FROM r WHERE replica IS NOT NULL UNION SELECT replica FROM decision_anchors ORDER BY replica`,
          )
        ).rows.map((r) => r.replica);
        const replicas: ReplicaVerifyResult[] = [];
        for (const name of names) replicas.push({ replica: name, ...(await this.verifyReplica(c, name, opts.sinceMs)) });
        await c.query('COMMIT');
        const bad = replicas.find((r) => !r.ok);
        const checked = replicas.reduce((n, r) => n + r.checked, 0);
        if (bad && !bad.ok) return { ...bad, message: `replica ${bad.replica}: ${bad.message}`, checked, replicas };
        return { ok: true, checked, firstSeq: null, lastSeq: null, headHash: replicas.length === 1 && replicas[0].ok ? replicas[0].headHash : '', replicas };
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  private async verifyReplica(c: pg.PoolClient, replica: string, sinceMs: number | undefined): Promise<VerifyResult> {
    const anchor = (await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM decision_anchors WHERE replica = $1', [replica])).rows[0];
    let startHash = anchor?.hash ?? GENESIS_HASH;
    let startSeq: number | null = anchor ? Number(anchor.seq) : 0;
    let fromSeq = 0;
    if (sinceMs !== undefined) {
      const first = (await c.query<{ s: string | null }>('SELECT min(seq) AS s FROM decisions WHERE replica = $1 AND time_ms >= $2', [replica, sinceMs])).rows[0].s;
      if (first === null) return { ok: true, checked: 0, firstSeq: null, lastSeq: null, headHash: startHash };
      const before = (await c.query<{ seq: string; hash: string }>('SELECT seq, hash FROM decisions WHERE replica = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1', [replica, first])).rows[0];
      if (before) (startHash = before.hash, startSeq = Number(before.seq));
      fromSeq = Number(first);
    }
    let checked = 0;
    let firstSeq: number | null = null;
    let after = fromSeq - 1;
    while (true) {
      const rows = (
        await c.query<{ seq: string; id: string; time_ms: string; verdict: string; agent: string | null; host: string; reason: string; rule: string | null; weight: number; json: string; hash: string }>(
          `SELECT seq, id, time_ms, verdict, agent, host, reason, rule, weight, json, hash FROM decisions WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT ${VERIFY_CHUNK}`,
          [replica, after],
        )
      ).rows.map(
        (r): ChainRow => ({
          seq: Number(r.seq),
          id: r.id,
          json: r.json,
          hash: r.hash,
          columns: { id: r.id, timeMs: Number(r.time_ms), verdict: r.verdict, agent: r.agent, host: r.host, reason: r.reason, rule: r.rule, weight: r.weight, replica },
        }),
      );
      if (!rows.length) return { ok: true, checked, firstSeq, lastSeq: startSeq, headHash: startHash };
      const full = rows.length === VERIFY_CHUNK;
      const v = verifyChain(rows, startHash, startSeq);
      firstSeq ??= rows[0].seq;
      if (!v.ok) {
        // A break at the very end of a full chunk is classified with the next chunk's first row in view.
        const at = rows.findIndex((r) => r.seq === v.seq);
        if (!(full && at === rows.length - 1)) return { ...v, checked: checked + v.checked };
        const prev = rows[at - 1];
        checked += v.checked;
        if (prev) (startHash = prev.hash, startSeq = prev.seq, after = prev.seq);
        else return { ...v, checked };
        continue;
      }
      checked += v.checked;
      startHash = v.headHash;
      startSeq = v.lastSeq;
      after = v.lastSeq ?? after;
      if (!full) return { ok: true, checked, firstSeq, lastSeq: startSeq, headHash: startHash };
    }
  }

  // ---- fleet-wide duties ----

  /**
   * Whether this process holds the fleet's alerting lock (a session advisory lock on a dedicated
   * connection): exactly one replica runs the spike detector over everyone's records. The lock goes with
   * the connection, so a replica that dies or loses the database hands it on.
   */
  async holdsLead(): Promise<boolean> {
    try {
      if (this.leader) {
        await this.leader.query('SELECT 1');
        return true;
      }
      const client = new pg.Client({ connectionString: this.connectUrl, connectionTimeoutMillis: 3_000, query_timeout: 5_000, application_name: 'agent-egress alerts' });
      client.on('error', () => {
        if (this.leader === client) this.leader = null;
      });
      await client.connect();
      const got = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [LOCK_NS, LOCK.alerts])).rows[0].ok;
      if (!got) {
        await client.end().catch(() => undefined);
        return false;
      }
      this.leader = client;
      return true;
    } catch {
      const l = this.leader;
      this.leader = null;
      await l?.end().catch(() => undefined);
      return false;
    }
  }
}

/** A reader for the CLI and for `serve --workers`' primary: fails at once when the server or schema is missing. */
export async function openPostgresReader(loc: PgLocation, opts: Omit<PostgresStoreOptions, 'writer'> = {}): Promise<PostgresDecisionStore> {
  const store = new PostgresDecisionStore(loc, opts);
  try {
    await store.checkReadable();
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
