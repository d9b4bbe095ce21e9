import type { PoolClient } from 'pg';

/**
 * The PostgreSQL schema, created and migrated by the proxy. `agent_egress_schema` holds the version;
 * each migration runs once, in a transaction, under an advisory lock so replicas starting together do
 * not race. A newer schema than this code knows is refused (an old replica must not write into it).
 *
 * decisions is range-partitioned by `stored_ms` (when the writer accepted the record: monotonic per
 * replica), one partition per UTC day, so retention drops whole partitions and always cuts a prefix of
 * every replica's chain. A unique constraint on a partitioned table must contain the partition key, so
 * the primary key is (id, stored_ms): the writer fixes stored_ms when it accepts a record and keeps it
 * through retries and the spool, so a re-sent record conflicts with itself and is ignored.
 */
export const SCHEMA_VERSION = 1;

const MIGRATIONS: string[] = [
  `CREATE SEQUENCE agent_egress_decision_gseq;
   CREATE TABLE decisions (
     stored_ms bigint NOT NULL,
     id text NOT NULL,
     replica text NOT NULL,
     seq bigint NOT NULL,
     gseq bigint NOT NULL DEFAULT nextval('agent_egress_decision_gseq'),
     time_ms bigint NOT NULL,
     verdict text NOT NULL,
     agent text,
     host text NOT NULL,
     reason text NOT NULL,
     rule text,
     path text,
     weight integer NOT NULL DEFAULT 1,
     json text NOT NULL,
     hash text NOT NULL,
     PRIMARY KEY (id, stored_ms)
   ) PARTITION BY RANGE (stored_ms);
   CREATE INDEX decisions_time ON decisions (time_ms);
   CREATE INDEX decisions_verdict_time ON decisions (verdict, time_ms);
   CREATE INDEX decisions_agent_time ON decisions (agent, time_ms);
   CREATE INDEX decisions_rule_time ON decisions (rule, time_ms);
   CREATE INDEX decisions_reason_time ON decisions (reason, time_ms);
   CREATE INDEX decisions_host_prefix ON decisions (host text_pattern_ops);
   CREATE INDEX decisions_chain ON decisions (replica, seq);
   CREATE INDEX decisions_gseq ON decisions (gseq);
   CREATE TABLE decision_anchors (replica text PRIMARY KEY, seq bigint NOT NULL, hash text NOT NULL);`,
];

/** Advisory lock keys (two int4s: a namespace and a purpose). */
export const LOCK_NS = 0x45475253; // "EGRS"
export const LOCK = { migrate: 1, ddl: 2, commitOrder: 3, alerts: 4 } as const;

export class SchemaError extends Error {
  override name = 'SchemaError';
}

export async function currentVersion(c: PoolClient): Promise<number | null> {
  const t = await c.query<{ exists: boolean }>("SELECT to_regclass('agent_egress_schema') IS NOT NULL AS exists");
  if (!t.rows[0].exists) return null;
  const v = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM agent_egress_schema');
  return v.rows[0].v ?? 0;
}

export async function migrate(c: PoolClient): Promise<void> {
  await c.query('SELECT pg_advisory_lock($1, $2)', [LOCK_NS, LOCK.migrate]);
  try {
    await c.query('CREATE TABLE IF NOT EXISTS agent_egress_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const have = (await currentVersion(c)) ?? 0;
    if (have > SCHEMA_VERSION) throw new SchemaError(`the store's schema is version ${have}, newer than this agent-egress (${SCHEMA_VERSION}): upgrade it`);
    for (let v = have + 1; v <= SCHEMA_VERSION; v++) {
      await c.query('BEGIN');
      try {
        await c.query(MIGRATIONS[v - 1]);
        await c.query('INSERT INTO agent_egress_schema (version) VALUES ($1)', [v]);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    }
  } finally {
    await c.query('SELECT pg_advisory_unlock($1, $2)', [LOCK_NS, LOCK.migrate]).catch(() => undefined);
  }
}

const DAY_MS = 86_400_000;

export function dayOf(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

export function partitionName(dayMs: number): string {
  return `decisions_p${new Date(dayMs).toISOString().slice(0, 10).replace(/-/g, '')}`;
}

function dayOfPartition(name: string): number | null {
  const m = /^decisions_p(\d{4})(\d{2})(\d{2})$/.exec(name);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
}

/** One partition per UTC day for every given day (idempotent; serialised so replicas do not race). */
export async function ensurePartitions(c: PoolClient, days: Iterable<number>): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK.ddl]);
    for (const d of days) {
      await c.query(`CREATE TABLE IF NOT EXISTS ${partitionName(d)} PARTITION OF decisions FOR VALUES FROM (${d}) TO (${d + DAY_MS})`);
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Drop every partition whose whole day is older than the cutoff, oldest first, each in a transaction
 * that first moves each replica's anchor to the last record it held: `log verify` then starts every
 * chain from its anchor. Returns the records dropped.
 */
export async function dropPartitionsBefore(c: PoolClient, cutoffMs: number): Promise<number> {
  const parts = await c.query<{ name: string }>(
    "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'decisions'::regclass",
  );
  const old = parts.rows
    .map((r) => ({ name: r.name, day: dayOfPartition(r.name) }))
    .filter((p): p is { name: string; day: number } => p.day !== null && p.day + DAY_MS <= cutoffMs)
    .sort((a, b) => a.day - b.day);
  let dropped = 0;
  for (const p of old) {
    await c.query('BEGIN');
    try {
      await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK.ddl]);
      const n = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${p.name}`);
      await c.query(
        `INSERT INTO decision_anchors (replica, seq, hash)
           SELECT DISTINCT ON (replica) replica, seq, hash FROM ${p.name} ORDER BY replica, seq DESC
         ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > decision_anchors.seq`,
      );
      await c.query(`DROP TABLE ${p.name}`);
      await c.query('COMMIT');
      dropped += Number(n.rows[0].n);
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      // Another replica dropped it first: nothing left to do for this one.
      if ((err as { code?: string }).code === '42P01') continue;
      throw err;
    }
  }
  return dropped;
}

export { DAY_MS };
