import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { bearerMatches } from './auth.js';
import { CSRF_HEADER, SESSION_COOKIE, SessionStore, clearedCookie, cookieValue, secretEquals, sessionCookie, type Role, type Session } from './session.js';

/**
 * Who may do what on the admin API. Three ways in: the admin token or the viewer token as a Bearer
 * header (API clients, the CLI), or a session cookie from `POST /api/session` (the dashboard). A
 * viewer reads everything and changes nothing; a state-changing request with a cookie also needs the
 * session's CSRF token in `X-CSRF-Token` (a Bearer header cannot be forged cross-site, a cookie can).
 */
export interface AccessOptions {
  adminToken?: string;
  viewerToken?: string;
  /** --no-admin-auth: everyone is admin (loopback only, enforced by the server). */
  open: boolean;
  /** Paths any method may GET without credentials (probes, the static page). */
  publicPaths: ReadonlySet<string>;
  sessions?: SessionStore;
  /** Failed sign-ins allowed per client address per minute before 429. Default 10. */
  signInFailuresPerMinute?: number;
}

export interface Access {
  role: Role;
  via: 'bearer' | 'cookie' | 'open';
  session?: Session;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const SESSION_PATH = '/api/session';
const access = new WeakMap<FastifyRequest, Access>();

/** The access a request was admitted with (set by the onRequest hook for every non-public request). */
export function accessOf(req: FastifyRequest): Access | undefined {
  return access.get(req);
}

function deny(reply: FastifyReply, code: number, message: string) {
  const error = code === 401 ? 'Unauthorized' : code === 403 ? 'Forbidden' : 'Too Many Requests';
  if (code === 401) reply.header('www-authenticate', 'Bearer realm="agent-egress"');
  return reply.code(code).send({ statusCode: code, error, message });
}

function isTls(req: FastifyRequest): boolean {
  return !!(req.raw.socket as { encrypted?: boolean }).encrypted;
}

export function registerAccess(app: FastifyInstance, opts: AccessOptions): void {
  const sessions = opts.sessions ?? new SessionStore();
  const failures = new Map<string, number[]>();
  const perMinute = opts.signInFailuresPerMinute ?? 10;

  const roleOfToken = (header: string | undefined): Role | null => {
    if (opts.adminToken && bearerMatches(header, opts.adminToken)) return 'admin';
    if (opts.viewerToken && bearerMatches(header, opts.viewerToken)) return 'viewer';
    return null;
  };

  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?', 1)[0];
    const method = req.method.toUpperCase();
    if (opts.open) {
      access.set(req, { role: 'admin', via: 'open' });
      return;
    }
    if (opts.publicPaths.has(path) && (method === 'GET' || method === 'HEAD')) return;
    if (path === SESSION_PATH && method === 'POST') return; // sign-in: checked by the route
    let a: Access;
    if (req.headers.authorization !== undefined) {
      // A wrong header is a wrong header: no falling back to a cookie the same client may also carry.
      const role = roleOfToken(req.headers.authorization);
      if (!role) return deny(reply, 401, 'a valid bearer token is required');
      a = { role, via: 'bearer' };
    } else {
      const s = sessions.get(cookieValue(req.headers.cookie, SESSION_COOKIE));
      if (!s) return deny(reply, 401, 'sign in, or send a valid bearer token');
      a = { role: s.role, via: 'cookie', session: s };
    }
    if (STATE_CHANGING.has(method)) {
      if (a.session && !secretEquals(headerValue(req.headers[CSRF_HEADER]), a.session.csrf)) {
        return deny(reply, 403, `missing or wrong CSRF token (send the csrfToken from ${SESSION_PATH} in X-CSRF-Token)`);
      }
      // Signing out is the one change a viewer may make.
      const signOut = path === SESSION_PATH && method === 'DELETE';
      if (a.role !== 'admin' && !signOut) return deny(reply, 403, 'read-only (viewer) access: this needs the admin token');
    }
    access.set(req, a);
  });

  app.post<{ Body: { token: string } }>(
    SESSION_PATH,
    {
      schema: {
        body: { type: 'object', additionalProperties: false, required: ['token'], properties: { token: { type: 'string', minLength: 1, maxLength: 1024 } } },
      },
    },
    async (req, reply) => {
      if (opts.open) return { role: 'admin', csrfToken: null, expiresAt: null, open: true };
      const now = Date.now();
      const client = req.ip;
      const recent = (failures.get(client) ?? []).filter((t) => now - t < 60_000);
      if (recent.length >= perMinute) {
        reply.header('retry-after', String(Math.ceil((recent[0] + 60_000 - now) / 1000)));
        return deny(reply, 429, 'too many failed sign-ins from this address; wait a minute');
      }
      const role = roleOfToken(`Bearer ${req.body.token}`);
      if (!role) {
        recent.push(now);
        failures.set(client, recent);
        if (failures.size > 10_000) failures.delete(failures.keys().next().value as string);
        return deny(reply, 401, 'wrong token');
      }
      failures.delete(client);
      // A new id on every sign-in (never one the client brought along: no session fixation).
      const old = cookieValue(req.headers.cookie, SESSION_COOKIE);
      if (old) sessions.delete(old);
      const s = sessions.create(role);
      reply.header('set-cookie', sessionCookie(s, isTls(req), now));
      reply.header('cache-control', 'no-store');
      return { role: s.role, csrfToken: s.csrf, expiresAt: new Date(s.expiresAt).toISOString(), open: false };
    },
  );

  app.get(SESSION_PATH, async (req, reply) => {
    const a = accessOf(req)!;
    reply.header('cache-control', 'no-store');
    return {
      role: a.role,
      via: a.via,
      csrfToken: a.session?.csrf ?? null,
      expiresAt: a.session ? new Date(a.session.expiresAt).toISOString() : null,
      open: a.via === 'open',
    };
  });

  app.delete(SESSION_PATH, async (req, reply) => {
    const a = accessOf(req)!;
    if (a.session) sessions.delete(a.session.id);
    reply.header('set-cookie', clearedCookie(isTls(req)));
    return { ok: true };
  });
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? undefined : v;
}
