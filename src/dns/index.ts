import { getServers } from 'node:dns';
import type { Logger } from 'pino';
import type { DecisionSink } from '../decisions/sink.js';
import type { AddressGuard } from '../net/guard.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { ApprovalGate } from '../approvals/types.js';
import { DnsCache } from './cache.js';
import { DnsConfigError, parseEndpoint } from './endpoint.js';
import { RateLimiter } from './rate-limit.js';
import { FilteringResolver } from './resolver.js';
import { bindServers, type BoundServer } from './server.js';
import { Upstream } from './upstream.js';
import { RCODE } from './wire.js';

export { DnsConfigError } from './endpoint.js';
export { parseCacheSize, parseRateLimit, parseRefuseCode } from './flags.js';

export interface DnsFilterOptions {
  /**
   * "127.0.0.1:5353", "[::1]:5353", "0.0.0.0:53"; UDP and TCP on the same port (port 0 = ephemeral).
   * Several addresses share one cache and one rate limiter.
   */
  listen: string | string[];
  /** "IP", "IP:PORT", "[v6]:PORT"; empty = the system's (dns.getServers()). */
  upstreams: string[];
  /** Called per query, so a reload takes effect at once. */
  policy: () => CompiledPolicy;
  /** The address guard for A/AAAA answers. */
  guard: () => AddressGuard;
  /** Every DNS decision is one DecisionRecord (method 'DNS', port null, host = qname, status = rcode). */
  sink: DecisionSink;
  /** Answer for names the policy refuses. Default NXDOMAIN. Refused query types always get REFUSED. */
  refuseWith?: 'NXDOMAIN' | 'REFUSED';
  /** Per client address; default 50/s with a burst of 100. */
  rateLimit?: { perSecond: number; burst: number } | null;
  /** Default 10 000; 0 disables the cache. */
  cacheMaxEntries?: number;
  /** Per upstream attempt; default 2000 ms. */
  upstreamTimeoutMs?: number;
  /** Default 128. */
  maxTcpConnections?: number;
  /** Per client address; default 8. */
  maxTcpPerClient?: number;
  /** Time a TCP client has for each complete query (not reset by single bytes); default 10 000 ms. */
  tcpIdleMs?: number;
  /** Queries handled at once; default 1024. */
  maxInFlight?: number;
  logger?: Logger;
  /** Where an ask is held (the approvals broker); absent = an ask is refused. */
  approvals?: () => ApprovalGate | null;
  /** How long a query is held for an approval (default 4 s). */
  approvalTimeoutMs?: number;
}

export interface DnsFilterHandle {
  /** The first listener's address and port. */
  address: string;
  port: number;
  /** Every listener, in the order given. */
  listeners: { address: string; port: number }[];
  close(): Promise<void>;
}

/**
 * Start the filtering resolver: agents resolve only names their policy could reach; everything else
 * is answered locally (NXDOMAIN/REFUSED) without any upstream query. Throws DnsConfigError for a
 * bad listen/upstream value and the socket error when the port cannot be bound.
 */
export async function startDnsFilter(opts: DnsFilterOptions): Promise<DnsFilterHandle> {
  const listens = (Array.isArray(opts.listen) ? opts.listen : [opts.listen]).map((l) => parseEndpoint(l, null));
  if (listens.length === 0) throw new DnsConfigError('no address to listen on');
  const upstreamTexts = opts.upstreams.length > 0 ? opts.upstreams : getServers();
  if (upstreamTexts.length === 0) throw new DnsConfigError('no upstream DNS servers: pass --dns-server');
  const servers = upstreamTexts.map((u) => parseEndpoint(u, 53));
  const rl = opts.rateLimit === undefined ? { perSecond: 50, burst: 100 } : opts.rateLimit;
  const resolver = new FilteringResolver({
    policy: opts.policy,
    guard: opts.guard,
    sink: opts.sink,
    upstream: new Upstream({ servers, timeoutMs: opts.upstreamTimeoutMs ?? 2000 }),
    refuseRcode: opts.refuseWith === 'REFUSED' ? RCODE.REFUSED : RCODE.NXDOMAIN,
    rateLimit: rl ? new RateLimiter(rl) : null,
    cache: new DnsCache({ maxEntries: opts.cacheMaxEntries ?? 10_000 }),
    logger: opts.logger,
    approvals: opts.approvals,
    approvalTimeoutMs: opts.approvalTimeoutMs,
  });
  const limits = {
    maxTcpConnections: opts.maxTcpConnections ?? 128,
    maxTcpPerClient: opts.maxTcpPerClient ?? 8,
    tcpIdleMs: opts.tcpIdleMs ?? 10_000,
    maxInFlight: opts.maxInFlight ?? 1024,
  };
  const bound: BoundServer[] = [];
  try {
    for (const ep of listens) bound.push(await bindServers(ep, resolver, limits, opts.logger));
  } catch (e) {
    await Promise.allSettled(bound.map((b) => b.close()));
    throw e;
  }
  const listeners = bound.map((b) => ({ address: b.address, port: b.port }));
  opts.logger?.info({ listeners, upstreams: upstreamTexts }, 'dns: filtering resolver listening');
  return {
    address: listeners[0].address,
    port: listeners[0].port,
    listeners,
    close: async () => {
      await Promise.allSettled(bound.map((b) => b.close()));
    },
  };
}
