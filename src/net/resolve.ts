import { promises as dnsp } from 'node:dns';
import { isIP } from 'node:net';
import { canonicalIp } from './ip.js';

export type ResolveErrorCode = 'not_found' | 'timeout' | 'failure';

export class ResolveError extends Error {
  override name = 'ResolveError';
  constructor(
    readonly code: ResolveErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Resolves a name to its canonical addresses (IPv4 and IPv6), deduped, in answer order; never empty. */
export interface Resolver {
  resolve(name: string): Promise<string[]>;
}

const DEFAULT_TIMEOUT_MS = 5000;
const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'NOTFOUND', 'NODATA', 'ENONAME']);
const TIMEOUT = new Set(['ETIMEOUT', 'ETIMEDOUT']);

function classify(err: unknown): ResolveErrorCode {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NOT_FOUND.has(code)) return 'not_found';
  if (typeof code === 'string' && TIMEOUT.has(code)) return 'timeout';
  return 'failure';
}

function errCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'error';
}

/** Canonicalise, dedupe, keep order; an empty answer is "not found", never an empty success. */
function finish(name: string, addresses: string[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const a of addresses) {
    const ip = canonicalIp(a);
    if (!ip || seen.has(ip.address)) continue;
    seen.add(ip.address);
    out.push(ip.address);
  }
  if (out.length === 0) throw new ResolveError('not_found', `no addresses for ${name}`);
  return out;
}

/**
 * Run `work` against an overall deadline. On expiry `cancel` is called (it aborts the outstanding
 * queries where the backend can) and the promise rejects with a timeout.
 */
async function withDeadline<T>(name: string, ms: number, work: Promise<T>, cancel: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      cancel();
      reject(new ResolveError('timeout', `resolving ${name} timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

type Outcome = { ok: true; addrs: string[] } | { ok: false; err: unknown };

const settle = (p: Promise<string[]>): Promise<Outcome> =>
  p.then(
    (addrs) => ({ ok: true as const, addrs }),
    (err: unknown) => ({ ok: false as const, err }),
  );

/**
 * Both families from the given servers. A family with no records (ENODATA, or an NXDOMAIN for one type
 * only) is fine; any other failure of either family fails the whole resolution, since an answer we
 * could not see might be the one the guard would refuse.
 */
async function resolveWithServers(name: string, servers: string[], timeoutMs: number): Promise<string[]> {
  // One c-ares channel per resolution: cancel() aborts every query on a channel, and a shared one
  // would let one slow name time out everybody else's lookups.
  const r = new dnsp.Resolver({ timeout: timeoutMs, tries: 1 });
  r.setServers(servers);
  const work = Promise.all([settle(r.resolve4(name)), settle(r.resolve6(name))]).then(([a, aaaa]) => {
    const outcomes = [a, aaaa];
    const failures = outcomes.filter((o): o is { ok: false; err: unknown } => !o.ok);
    const hard = failures.filter((f) => classify(f.err) !== 'not_found');
    if (hard.length > 0) {
      const code = hard.some((f) => classify(f.err) === 'timeout') ? 'timeout' : 'failure';
      throw new ResolveError(code, `resolving ${name} failed: ${hard.map((f) => errCode(f.err)).join(', ')}`);
    }
    const addrs = outcomes.flatMap((o) => (o.ok ? o.addrs : []));
    return finish(name, addrs);
  });
  return withDeadline(name, timeoutMs, work, () => r.cancel());
}

/** The system resolver (getaddrinfo: /etc/hosts, nsswitch); it cannot be cancelled, only abandoned. */
async function resolveWithSystem(name: string, timeoutMs: number): Promise<string[]> {
  const work = dnsp.lookup(name, { all: true, verbatim: true }).then(
    (list) => finish(name, list.map((e) => e.address)),
    (err: unknown) => {
      throw new ResolveError(classify(err), `resolving ${name} failed: ${errCode(err)}`);
    },
  );
  return withDeadline(name, timeoutMs, work, () => undefined);
}

/**
 * A resolver that asks `servers` ("IP", "IP:PORT", "[v6]:PORT") directly, or the system resolver when
 * none are given. Every call goes to the network: no caching, so a policy always judges fresh answers.
 */
export function createResolver(opts: { servers?: string[]; timeoutMs?: number }): Resolver {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Error('resolver timeout must be a positive number');
  const servers = opts.servers && opts.servers.length > 0 ? [...opts.servers] : null;
  // Validate the server list once, up front: setServers throws on a malformed entry.
  if (servers) new dnsp.Resolver().setServers(servers);
  return {
    async resolve(name: string): Promise<string[]> {
      if (name.length === 0) throw new ResolveError('failure', 'empty name');
      // An address needs no lookup (and a DNS query for "1.2.3.4" would ask for a name that is not one).
      if (isIP(name) !== 0) return finish(name, [name]);
      return servers ? resolveWithServers(name, servers, timeoutMs) : resolveWithSystem(name, timeoutMs);
    },
  };
}
