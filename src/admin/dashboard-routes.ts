import type { FastifyInstance } from 'fastify';
import { buildFilter, QueryError, type RawFilter } from '../decisions/query.js';
import type { DecisionStore } from '../decisions/store/types.js';
import type { PolicyHolder } from '../policy/holder.js';
import type { RecentAlerts } from '../decisions/alert-log.js';
import { ruleSnippets } from '../decisions/rule-snippet.js';
import type { RuleSpec } from '../policy/types.js';

export interface AlertSettings {
  recent: RecentAlerts;
  /** Denies per window that count as a spike (--alert-threshold). */
  threshold: number;
  windowMs: number;
}

export interface DashboardRouteOptions {
  store: DecisionStore;
  policy: PolicyHolder;
  alerts?: AlertSettings | null;
  /** The filter schema properties the decision routes share. */
  filterProps: Record<string, unknown>;
  errorBody: Record<string, unknown>;
}

/** Bucket sizes the timeline picks from, so a chart has at most ~120 columns over any range. */
const BUCKETS = [10_000, 60_000, 300_000, 900_000, 3_600_000, 6 * 3_600_000, 86_400_000];
const MAX_BUCKETS = 120;
const BUCKET = /^(\d{1,6})(s|m|h|d)$/;
const UNIT: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function bucketFor(rangeMs: number, asked: string | undefined): number {
  if (asked !== undefined) {
    const m = BUCKET.exec(asked);
    const ms = m ? Number(m[1]) * UNIT[m[2]] : 0;
    if (ms < 1000) throw new QueryError('bucket', 'expected a bucket size like 10s, 1m, 1h');
    if (rangeMs / ms > 10_000) throw new QueryError('bucket', 'too small for the range: at most 10000 buckets');
    return ms;
  }
  return BUCKETS.find((b) => rangeMs / b <= MAX_BUCKETS) ?? BUCKETS[BUCKETS.length - 1];
}

function ruleNamed(spec: { rules: RuleSpec[]; agents: { name: string; rules: RuleSpec[] }[] }, name: string | null, agent: string | null): (RuleSpec & { agent: string | null }) | null {
  if (!name) return null;
  const own = agent ? spec.agents.find((a) => a.name === agent)?.rules.find((r) => r.name === name) : undefined;
  if (own) return { ...own, agent };
  const shared = spec.rules.find((r) => r.name === name);
  return shared ? { ...shared, agent: null } : null;
}

/** The dashboard's reads beyond the plain decision routes: a record's detail, time buckets, recent alerts. */
export function registerDashboardRoutes(app: FastifyInstance, o: DashboardRouteOptions): void {
  const timelineQuery = { type: 'object', additionalProperties: false, properties: { ...o.filterProps, bucket: { type: 'string', minLength: 2, maxLength: 8 } } };

  app.get<{ Params: { id: string } }>(
    '/api/decisions/:id/detail',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } }, required: ['id'] }, response: { 400: o.errorBody, 404: o.errorBody } } },
    async (req, reply) => {
      const record = await o.store.get(req.params.id);
      if (!record) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no decision ${req.params.id}` });
      const chain = await o.store.chainPosition(req.params.id);
      const current = o.policy.current();
      // The rule as the policy in force spells it; `policyHash` says whether that is the policy that decided.
      const rule = ruleNamed(current.spec, record.rule ?? null, record.agent ?? null);
      return { record, chain, rule, ruleFromCurrentPolicy: record.policyHash === current.hash, snippets: ruleSnippets(record) };
    },
  );

  app.get<{ Querystring: RawFilter & { bucket?: string } }>('/api/decisions/timeline', { schema: { querystring: timelineQuery, response: { 400: o.errorBody } } }, async (req) => {
    const { bucket, ...raw } = req.query;
    const now = Date.now();
    const f = buildFilter({ since: '1h', ...raw }, now);
    const sinceMs = f.sinceMs!;
    const untilMs = f.untilMs ?? now;
    if (untilMs <= sinceMs) throw new QueryError('until', 'must be after since');
    const bucketMs = bucketFor(untilMs - sinceMs, bucket);
    const buckets = await o.store.timeline(f, bucketMs);
    const a = o.alerts;
    return {
      sinceMs,
      untilMs,
      bucketMs,
      buckets,
      // The spike threshold is per agent per window; scaled to the bucket, it is where one agent alone would alert.
      alert: a ? { threshold: a.threshold, windowMs: a.windowMs, perBucket: (a.threshold * bucketMs) / a.windowMs } : null,
      alerts: a ? a.recent.list(sinceMs, untilMs) : [],
    };
  });

  app.get<{ Querystring: { since?: string } }>(
    '/api/alerts',
    { schema: { querystring: { type: 'object', additionalProperties: false, properties: { since: o.filterProps.since } }, response: { 400: o.errorBody } } },
    async (req) => {
      const f = buildFilter({ since: req.query.since ?? '24h' });
      const a = o.alerts;
      return { enabled: !!a, threshold: a?.threshold ?? null, windowMs: a?.windowMs ?? null, alerts: a ? a.recent.list(f.sinceMs) : [] };
    },
  );
}
