import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ApprovalBroker } from '../approvals/broker.js';
import { grantDurationMs } from '../approvals/duration.js';
import type { GrantStore } from '../approvals/grant-store.js';
import { ApprovalError, type ApprovalEvent } from '../approvals/types.js';

export interface ApprovalsApi {
  broker: ApprovalBroker;
  grants: GrantStore;
  subscribe(fn: (e: ApprovalEvent) => void): () => void;
}

const id = { type: 'object', additionalProperties: false, required: ['id'], properties: { id: { type: 'string', pattern: '^[A-Za-z0-9_.:-]{1,128}$' } } } as const;
const by = { type: 'string', minLength: 1, maxLength: 256 } as const;
const approveBody = {
  type: 'object',
  additionalProperties: false,
  required: ['scope'],
  properties: {
    scope: { type: 'string', enum: ['once', 'agent', 'everyone'] },
    for: { type: 'string', minLength: 2, maxLength: 16 },
    always: { type: 'boolean' },
    by,
  },
} as const;
const denyBody = { type: 'object', additionalProperties: false, properties: { by } } as const;
const emptyBody = { type: 'object', additionalProperties: false, properties: {} } as const;

/** Who and where: what a pending approval and a grant both name. */
const WHERE = {
  id: { type: 'string' },
  agent: { type: ['string', 'null'] },
  host: { type: 'string' },
  port: { type: ['integer', 'null'] },
} as const;
const pending = {
  type: 'object',
  properties: {
    ...WHERE,
    method: { type: 'string' },
    createdAt: { type: 'string' },
    waiting: { type: 'integer' },
    reason: { type: 'string' },
    rule: { type: ['string', 'null'] },
  },
} as const;
const grant = {
  type: 'object',
  properties: {
    ...WHERE,
    expiresAt: { type: ['string', 'null'] },
    always: { type: 'boolean' },
    by: { type: 'string' },
    createdAt: { type: 'string' },
    approval: { type: ['string', 'null'] },
    rule: { type: 'string' },
  },
} as const;
const ok = { type: 'object', properties: { ok: { type: 'boolean' } } } as const;
const error = { type: 'object', properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' } } } as const;
const errors = { 400: error, 404: error, 409: error, 500: error } as const;

const NAMES: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 409: 'Conflict', 500: 'Internal Server Error' };

/** deny and revoke need nothing in their body: a POST without one means `{}`. */
const EMPTY_IS_OBJECT = async (req: { body: unknown }): Promise<void> => {
  if (req.body === undefined || req.body === null) req.body = {};
};

function refuse(reply: FastifyReply, err: unknown): FastifyReply {
  if (!(err instanceof ApprovalError)) throw err;
  return reply.code(err.status).send({ statusCode: err.status, error: NAMES[err.status], message: err.message });
}

/**
 * The approvals API: the pending queue, decisions on it, and the grants. Behind the admin API's bearer
 * token (every route); the origin guard already refuses cross-origin and non-JSON state changes.
 */
export function registerApprovalRoutes(app: FastifyInstance, api: ApprovalsApi): void {
  app.get('/api/approvals', { schema: { response: { 200: { type: 'object', properties: { pending: { type: 'array', items: pending } } } } } }, async () => ({
    pending: api.broker.list(),
  }));

  app.post<{ Params: { id: string }; Body: { scope: 'once' | 'agent' | 'everyone'; for?: string; always?: boolean; by?: string } }>(
    '/api/approvals/:id/approve',
    { schema: { params: id, body: approveBody, response: { 200: { type: 'object', properties: { ok: { type: 'boolean' }, grant }, }, ...errors } } },
    async (req, reply) => {
      const b = req.body;
      let forMs: number | undefined;
      if (b.for !== undefined) {
        const ms = grantDurationMs(b.for);
        if (ms === null) return refuse(reply, new ApprovalError(400, `body/for must be a duration like 30m, 1h or 7d (at most 365d), got ${JSON.stringify(b.for)}`));
        forMs = ms;
      }
      try {
        const r = await api.broker.approve(req.params.id, { scope: b.scope, forMs, always: b.always === true, by: b.by });
        return r.grant ? { ok: true, grant: r.grant } : { ok: true };
      } catch (err) {
        return refuse(reply, err);
      }
    },
  );

  app.post<{ Params: { id: string }; Body: { by?: string } }>(
    '/api/approvals/:id/deny',
    { schema: { params: id, body: denyBody, response: { 200: ok, ...errors } }, preValidation: EMPTY_IS_OBJECT },
    async (req, reply) => {
      try {
        api.broker.deny(req.params.id, req.body?.by);
        return { ok: true };
      } catch (err) {
        return refuse(reply, err);
      }
    },
  );

  app.get(
    '/api/grants',
    {
      schema: {
        response: {
          200: {
            type: 'object',
            properties: {
              grants: { type: 'array', items: grant },
              file: { type: 'string' },
              lastError: { type: ['object', 'null'], properties: { time: { type: 'string' }, message: { type: 'string' } } },
            },
          },
        },
      },
    },
    async () => ({ grants: api.grants.list(), file: api.grants.path, lastError: api.grants.lastError }),
  );

  app.post<{ Params: { id: string } }>(
    '/api/grants/:id/revoke',
    { schema: { params: id, body: emptyBody, response: { 200: ok, ...errors } }, preValidation: EMPTY_IS_OBJECT },
    async (req, reply) => {
      try {
        await api.grants.revoke(req.params.id);
        return { ok: true };
      } catch (err) {
        return refuse(reply, err);
      }
    },
  );
}
