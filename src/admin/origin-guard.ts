import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isLoopbackHost } from '../net/endpoint.js';

/**
 * DNS rebinding and CSRF guard for the admin API.
 *
 * Rebinding: a page on attacker.example re-points its name at 127.0.0.1 and then reads the admin API
 * "same-origin". The browser still sends `Host: attacker.example`, so only Hosts the admin API is
 * known by are answered: any IP literal (a browser cannot rebind a literal: the origin *is* the
 * address, which is how kubelet probes and `curl http://10.1.2.3:3129` arrive), localhost names on a
 * loopback or wildcard listener (browsers resolve `localhost` to loopback themselves), and the names
 * configured with `--admin-host`. The port is not compared: the name is what rebinding forges, and
 * port forwards (`kubectl port-forward 8080:3129`) legitimately change the port.
 *
 * CSRF: a cross-site form or `text/plain` fetch needs no CORS preflight. State-changing methods need
 * `Content-Type: application/json` or an `Authorization` header (either forces a preflight, which
 * this API never approves), and any request whose `Origin` is not the admin's own origin, or whose
 * `Sec-Fetch-Site` says another site or origin sent it, is refused.
 */
export interface OriginGuardOptions {
  /** The listen host as configured ("127.0.0.1", "::", "localhost"). */
  listenHost: string;
  /** Extra names the admin API is reached by (`--admin-host`), e.g. a Service DNS name. */
  names?: readonly string[];
  /** Static, data-free page files: a cross-site link or <script> to them reveals nothing. */
  staticPaths?: ReadonlySet<string>;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** "host", "host:port", "[v6]:port" to the lowercase host without port and trailing dot; null when malformed. */
export function hostOfHeader(value: string | undefined): string | null {
  if (!value) return null;
  const v = value.trim().toLowerCase();
  let host: string;
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end < 0) return null;
    host = v.slice(1, end);
    const rest = v.slice(end + 1);
    if (rest && !/^:\d{1,5}$/.test(rest)) return null;
    return isIP(host) === 6 ? host : null;
  }
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(v);
  if (!m) return null;
  host = m[1].replace(/\.$/, '');
  return host || null;
}

function isLocalhostName(h: string): boolean {
  return h === 'localhost' || h.endsWith('.localhost');
}

export function makeHostCheck(opts: OriginGuardOptions): (host: string | null) => boolean {
  const listen = opts.listenHost.toLowerCase();
  const wildcard = listen === '0.0.0.0' || listen === '::' || listen === '';
  const localNames = wildcard || isLoopbackHost(listen);
  const names = new Set((opts.names ?? []).map((n) => n.trim().toLowerCase().replace(/\.$/, '')).filter(Boolean));
  if (!isIP(listen) && listen) names.add(listen);
  return (host) => {
    if (!host) return false;
    if (isIP(host)) return true;
    if (names.has(host)) return true;
    return localNames && isLocalhostName(host);
  };
}

function refuse(reply: FastifyReply, code: number, error: string, message: string) {
  return reply.code(code).send({ statusCode: code, error, message });
}

function mediaType(ct: string | undefined): string {
  return (ct ?? '').split(';', 1)[0].trim().toLowerCase();
}

/** Registers the Host and Origin checks as the first onRequest hook, the content-type check before parsing, and lets a JSON POST carry an empty body. */
export function registerOriginGuard(app: FastifyInstance, opts: OriginGuardOptions): void {
  const hostAllowed = makeHostCheck(opts);
  const STATIC = opts.staticPaths ?? new Set<string>();
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const host = hostOfHeader(req.headers.host);
    if (!hostAllowed(host)) {
      return refuse(reply, 421, 'Misdirected Request', `Host ${JSON.stringify(req.headers.host ?? '')} is not a name of this admin API (IP address, localhost, or --admin-host)`);
    }
    const path = req.url.split('?', 1)[0];
    const method = req.method.toUpperCase();
    const staticGet = (method === 'GET' || method === 'HEAD') && STATIC.has(path);
    const origin = req.headers.origin;
    if (origin !== undefined && !staticGet) {
      const own = [`http://${req.headers.host}`, `https://${req.headers.host}`].map((o) => o.toLowerCase());
      if (!own.includes(origin.trim().toLowerCase())) return refuse(reply, 403, 'Forbidden', `cross-origin request refused (Origin ${JSON.stringify(origin)})`);
    }
    const site = String(req.headers['sec-fetch-site'] ?? '').toLowerCase();
    if ((site === 'cross-site' || site === 'same-site') && !staticGet) {
      return refuse(reply, 403, 'Forbidden', `cross-origin request refused (Sec-Fetch-Site: ${site})`);
    }
  });
  // After every onRequest hook, so a missing token still answers 401 first; before the body is read.
  app.addHook('preParsing', async (req: FastifyRequest, reply: FastifyReply, payload) => {
    const method = req.method.toUpperCase();
    if (STATE_CHANGING.has(method) && mediaType(req.headers['content-type']) !== 'application/json' && !req.headers.authorization) {
      return refuse(reply, 415, 'Unsupported Media Type', `${method} needs Content-Type: application/json (or an Authorization header)`);
    }
    return payload;
  });
  // The reload takes no body; `curl -X POST -H 'content-type: application/json'` sends none.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      const err = new Error('body is not valid JSON') as Error & { statusCode: number };
      err.statusCode = 400;
      done(err, undefined);
    }
  });
}
