import Fastify, { type FastifyBaseLogger, type FastifyError } from 'fastify';
import type { Logger } from 'pino';
import type { ServerResponse } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import { REASONS } from '../policy/vocabulary.js';
import { buildFilter, MAX_LIMIT, QueryError, type RawFilter } from '../decisions/query.js';
import type { DecisionStore } from '../decisions/store/types.js';
import { CursorError } from '../decisions/store/cursor.js';
import type { PolicyHolder } from '../policy/holder.js';
import { isLoopbackHost } from '../net/endpoint.js';
import { AdminConfigError, assertAdminAuthConfig } from './auth.js';
import { registerOriginGuard } from './origin-guard.js';
import { registerAccess } from './access.js';
import { ASSET_PATHS, registerAssets, registerSecurityHeaders } from './assets.js';
import { registerDashboardRoutes, type AlertSettings } from './dashboard-routes.js';
import type { SessionStore } from './session.js';
import { registerApprovalRoutes, type ApprovalsApi } from './approvals-routes.js';
import { safeJson } from '../decisions/display.js';

export interface AdminServerOptions {
  /** "127.0.0.1:3129"; port 0 picks a free one. */
  listen: string;
  /** The bearer token every data and control endpoint requires. Required unless `open`. */
  token?: string;
  /** A second token for read-only access (`--viewer-token`): reads everything, changes nothing. */
  viewerToken?: string;
  /** Dashboard sessions (default: a new in-memory store). */
  sessions?: SessionStore;
  /** Spike alerts for the dashboard's timeline (`GET /api/alerts`); null when alerts are off. */
  alerts?: AlertSettings | null;
  /** No token at all (`--no-admin-auth`): only on loopback, and only when asked for explicitly. */
  open?: boolean;
  /** /metrics needs the token too (by default it is open, like the probes). */
  metricsAuth?: boolean;
  store: DecisionStore;
  policy: PolicyHolder;
  /** A prom-client Registry, or serve's LazyRegistry (prom-client loaded on the first scrape). */
  metricsRegistry: { readonly contentType: string; metrics(): Promise<string> };
  ready: () => boolean;
  logger?: Logger;
  /** Names besides IP literals and localhost that the admin API answers to (DNS rebinding guard). */
  hosts?: string[];
  /** Transparent capture: which captured port each listener stands for (shown in /healthz). */
  transparent?: () => { capturedPort: number; address: string; port: number }[];
  /** How often the SSE stream polls the store for other processes' writes. Default 1000 ms. */
  streamPollMs?: number;
  /** Serve the connections of this already-bound listener instead of listening (runtime/lazy-admin.ts). */
  listener?: NetServer;
  /** The approvals queue and grants (src/admin/approvals-routes.ts); absent = no approvals API. */
  approvals?: ApprovalsApi;
}

export interface AdminServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

const FILTER_PROPS = {
  since: { type: 'string', minLength: 1, maxLength: 64 },
  until: { type: 'string', minLength: 1, maxLength: 64 },
  decision: { type: 'string', enum: ['allow', 'deny'] },
  agent: { type: 'string', minLength: 1, maxLength: 256 },
  host: { type: 'string', minLength: 1, maxLength: 255 },
  reason: { type: 'string', enum: [...REASONS] },
  rule: { type: 'string', minLength: 1, maxLength: 256 },
  path: { type: 'string', minLength: 1, maxLength: 2048 },
  method: { type: 'string', minLength: 1, maxLength: 20 },
  capture: { type: 'string', enum: ['transparent'] },
} as const;

const filterQuery = { type: 'object', additionalProperties: false, properties: FILTER_PROPS } as const;
const pageQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { ...FILTER_PROPS, limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT }, cursor: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;
// `param` must be in the schema: fastify's serializer drops properties a response schema does not name.
const errorBody = { type: 'object', properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' }, param: { type: 'string' } } } as const;
// Records are returned as stored; their shape is documented in docs/api.md and src/decisions/record.ts.
const recordSchema = { type: 'object', additionalProperties: true } as const;

/** Which paths answer without a token: the probes, and the static page that holds no data. */
const PUBLIC = ['/healthz', '/readyz', ...ASSET_PATHS];

/**
 * The admin API on its own listener. Refuses to start on a non-loopback address without a token,
 * because every decision (hosts, agents, paths) is in there.
 */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { host, port } = assertAdminAuthConfig(opts.listen, opts.token, opts.open, isLoopbackHost, opts.viewerToken);
  const publicPaths = new Set(opts.metricsAuth ? PUBLIC : [...PUBLIC, '/metrics']);
  const app = Fastify({
    // Per-request logs would double the decision log; a warn-level child keeps only the admin API's problems.
    ...(opts.logger ? { loggerInstance: (opts.logger as Logger).child({ component: 'admin' }, { level: 'warn' }) as FastifyBaseLogger } : { logger: false }),
    forceCloseConnections: true,
    // Reject unknown query parameters instead of silently dropping them (a typo would widen a query).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, allErrors: false } },
  });
  const streams = new Set<ServerResponse>();
  registerOriginGuard(app, { listenHost: host, names: opts.hosts, staticPaths: new Set(ASSET_PATHS) });
  registerSecurityHeaders(app);
  registerAccess(app, { adminToken: opts.token, viewerToken: opts.viewerToken, open: !opts.token, publicPaths, sessions: opts.sessions });

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err.validation) {
      const v = err.validation[0];
      const p = v.params as { additionalProperty?: string; missingProperty?: string };
      const name = v.instancePath.replace(/^\//, '') || p.additionalProperty || p.missingProperty || '';
      const msg = p.additionalProperty ? `unknown parameter ${JSON.stringify(p.additionalProperty)}` : `${name} ${v.message ?? 'is invalid'}`;
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `${err.validationContext ?? 'request'}: ${msg}`, param: name });
    }
    if (err instanceof QueryError) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message, param: err.param });
    if (err instanceof CursorError) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message, param: 'cursor' });
    const code = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (code === 500) opts.logger?.error({ err }, 'admin API error');
    return reply.code(code).send({ statusCode: code, error: code === 500 ? 'Internal Server Error' : err.name, message: code === 500 ? 'internal error' : err.message });
  });

  const bindingSchema = { type: 'object', properties: { capturedPort: { type: 'integer' }, address: { type: 'string' }, port: { type: 'integer' } } };
  // Still 200 when the store is degraded: the proxy serves (and queues or spools records); a restart would not help.
  app.get(
    '/healthz',
    {
      schema: {
        response: {
          200: {
            type: 'object',
            properties: {
              ok: { type: 'boolean' },
              store: { type: 'object', properties: { degraded: { type: 'boolean' }, pendingRecords: { type: 'integer' }, spooledRecords: { type: 'integer' }, droppedRecords: { type: 'integer' } } },
              transparent: { type: 'array', items: bindingSchema },
            },
          },
        },
      },
    },
    async () => {
      const s = opts.store.stats();
      const t = opts.transparent?.() ?? [];
      const store = { degraded: s.degraded ?? s.failing, pendingRecords: s.pending, spooledRecords: s.spooled ?? 0, droppedRecords: s.dropped };
      return t.length ? { ok: true, store, transparent: t } : { ok: true, store };
    },
  );
  app.get('/readyz', async (_req, reply) => {
    const ready = opts.ready();
    return reply.code(ready ? 200 : 503).send({ ready });
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', opts.metricsRegistry.contentType);
    return opts.metricsRegistry.metrics();
  });

  registerAssets(app);
  registerDashboardRoutes(app, { store: opts.store, policy: opts.policy, alerts: opts.alerts, filterProps: FILTER_PROPS, errorBody });

  app.get<{ Querystring: RawFilter }>(
    '/api/decisions',
    {
      schema: {
        querystring: pageQuery,
        response: { 200: { type: 'object', properties: { records: { type: 'array', items: recordSchema }, nextCursor: { type: ['string', 'null'] } } }, 400: errorBody },
      },
    },
    async (req) => opts.store.query(buildFilter(req.query)),
  );

  app.get<{ Querystring: RawFilter }>('/api/decisions/summary', { schema: { querystring: filterQuery, response: { 400: errorBody } } }, async (req) =>
    opts.store.summary(buildFilter(req.query)),
  );

  app.get<{ Params: { id: string } }>(
    '/api/decisions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } }, required: ['id'] }, response: { 200: recordSchema, 400: errorBody, 404: errorBody } } },
    async (req, reply) => {
      const r = await opts.store.get(req.params.id);
      if (!r) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no decision ${req.params.id}` });
      return r;
    },
  );

  // Server-Sent Events of decisions as they are committed to the store (so what the stream shows is
  // exactly what a query will find). Woken by this process's commits, and polled for other writers.
  app.get<{ Querystring: RawFilter }>('/api/decisions/stream', { schema: { querystring: filterQuery } }, async (req, reply) => {
    const filter = buildFilter(req.query);
    let cursor = (await opts.store.tailAfter(null)).cursor;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': connected\n\n');
    streams.add(res);
    let busy = false;
    let again = false;
    const pump = async (): Promise<void> => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        // Bounded: at most 20 pages per wake-up; the next wake-up continues.
        for (let i = 0; i < 20 && !res.destroyed; i++) {
          const page = await opts.store.tailAfter(cursor, filter, 500);
          // Ended while reading (the admin API closing ends every stream before their 'close' events).
          if (res.writableEnded || res.destroyed) break;
          cursor = page.cursor;
          for (const r of page.records) res.write(`id: ${r.id}\nevent: decision\ndata: ${JSON.stringify(r)}\n\n`);
          if (page.records.length < 500) break;
        }
      } catch (err) {
        opts.logger?.error({ err }, 'decision stream read failed');
      } finally {
        busy = false;
      }
      if (again) {
        again = false;
        void pump();
      }
    };
    const off = opts.store.onStored(() => void pump());
    // Approval queue changes ride the same stream, as `event: approval`.
    const offApprovals = opts.approvals?.subscribe((e) => {
      if (!res.writableEnded && !res.destroyed) res.write(`event: approval\ndata: ${safeJson(e)}\n\n`);
    });
    const poll = setInterval(() => void pump(), opts.streamPollMs ?? 1000);
    const beat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    poll.unref();
    beat.unref();
    const stop = () => {
      off();
      offApprovals?.();
      clearInterval(poll);
      clearInterval(beat);
      streams.delete(res);
    };
    res.on('close', stop);
  });

  app.get('/api/policy', async () => {
    const s = opts.policy.state();
    const spec = s.policy.spec;
    return {
      hash: s.policy.hash,
      loadedAt: s.loadedAt,
      files: s.files,
      reloads: s.reloads,
      reloadFailures: s.reloadFailures,
      lastError: s.lastError,
      mode: spec.mode,
      // Token hashes stay out of the API: a short token's hash can be brute-forced.
      policy: { ...spec, agents: spec.agents.map((a) => ({ ...a, tokenSha256: a.tokenSha256 ? '<redacted>' : null })) },
    };
  });

  app.post('/api/policy/reload', async (_req, reply) => {
    const r = await opts.policy.reload('api');
    return reply.code(r.ok ? 200 : 422).send(r);
  });

  if (opts.approvals) registerApprovalRoutes(app, opts.approvals);

  app.addHook('onClose', async () => {
    for (const s of streams) s.end();
    streams.clear();
  });

  if (opts.listener) {
    await app.ready();
    const a = opts.listener.address();
    if (!a || typeof a === 'string') throw new AdminConfigError('admin API did not bind a TCP address');
    // The request-head deadline (slowloris) runs on a timer node:http starts on 'listening'.
    app.server.emit('listening');
    opts.listener.on('connection', (s: Socket) => app.server.emit('connection', s));
    // fastify force-closes connections only on a server it listened with itself.
    const close = async () => {
      await app.close();
      app.server.closeAllConnections();
    };
    return { address: a.address, port: a.port, close };
  }
  await app.listen({ host, port });
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new AdminConfigError('admin API did not bind a TCP address');
  return { address: addr.address, port: addr.port, close: () => app.close() };
}
