import { readFileSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { JsonLinesSink } from '../decisions/json-sink.js';
import { recordEncoder, type RecordFormat } from '../decisions/record-format.js';
import { FanoutSink, type DecisionSink } from '../decisions/sink.js';
import { AddressGuard } from '../net/guard.js';
import { createResolver } from '../net/resolve.js';
import type { PolicyFlags } from '../policy/index.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { ProxyLimits } from '../proxy/options.js';
import { ProxyServer } from '../proxy/server.js';
import type { VetContext } from '../proxy/vet.js';
import { isLoopbackHost } from '../net/endpoint.js';
import { formatListen, parseListen } from './listen.js';
import { FilePolicyHolder } from './policy-holder.js';
import { createStoreWriter, isFleetStore, type DecisionStore, type StoreLocation } from '../decisions/store/index.js';
import { FleetSpikeFeed } from '../decisions/fleet-alerts.js';
import { DecisionMetrics } from '../decisions/metrics.js';
import { LazyRegistry } from '../decisions/lazy-registry.js';
import type { Registry } from 'prom-client';
import { SpikeDetector, type SpikeOptions } from '../decisions/alerts.js';
import type { AdminServer } from '../admin/server.js';
import { startLazyAdmin } from './lazy-admin.js';
import { IdleReclaimer } from './idle-reclaim.js';
import type { AlertSettings } from '../admin/dashboard-routes.js';
import { RecentAlerts } from '../decisions/alert-log.js';
import { resolveAdminAuth, logAdminAuth } from '../admin/token-file.js';
import type { DnsFilterHandle } from '../dns/index.js';
import { startInspector } from './inspect.js';
import { startApprovals, type ApprovalsConfig, type RunningApprovals } from './approvals.js';
import type { SocksServer } from '../capture/socks5.js';
import type { TransparentListener } from '../capture/transparent.js';
import type { TransparentMapping } from '../capture/mapping.js';

export interface EgressConfig {
  listen: string;
  policyFile?: string;
  flags: PolicyFlags;
  dnsServers: string[];
  /** JSON-lines decision log: a path, or undefined for stdout, or null for none (tests, benchmarks). */
  logFile?: string | null;
  /** How the JSON-lines log writes a record: native (default) or OCSF events. */
  recordFormat?: RecordFormat;
  logQuery?: boolean;
  limits?: Partial<ProxyLimits>;
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** HTTPS inspection: the CA to mint leaves with (else the policy's inspection:), and extra upstream roots. */
  inspect?: { caFile?: string; caKeyFile?: string; upstreamCaFiles?: string[] };
  /** Poll the policy file for changes (ms); 0 disables. */
  watchMs?: number;
  /** A changed policy file is read only once unchanged this long (ms; default 2000, 0 = at once). */
  policySettleMs?: number;
  /** Extra sinks (tests; the store and alerts are added here by serve). */
  sinks?: DecisionSink[];
  logger?: Logger;
  /** The decision store (SQLite in dataDir unless `location` says otherwise); null/undefined = none. */
  store?: { dataDir: string; retentionMs?: number; maxBytes?: number; location?: StoreLocation; replica?: string; maxMemory?: number } | null;
  /** The admin API (queries, metrics, reload); null/undefined = none. */
  admin?: { listen: string; token?: string; viewerToken?: string; hosts?: string[]; noAuth?: boolean; metricsAuth?: boolean } | null;
  /** Spike alerts on denies (needs nothing else); null/undefined = defaults, false = off. */
  alerts?: Omit<SpikeOptions, 'registry' | 'logger' | 'onAlert'> | false | null;
  /** Addresses the guard must refuse besides this process's own listeners (e.g. a cluster primary's admin API). */
  guardSelf?: { address: string; port: number }[];
  /** Export the companion firewall's kernel counters (same host and namespace) with /metrics. */
  firewallMetrics?: 'nftables' | 'iptables' | null;
  /** Approvals (held asks) and grants; null/undefined = defaults (grants in <data-dir>/grants.yaml). */
  approvals?: ApprovalsConfig | null;
  /** The SOCKS5 listener (src/capture/socks5.ts); null/undefined = none. */
  socks?: { listen: string } | null;
  /** The filtering DNS resolver; null/undefined = none. */
  dns?: {
    listen: string[];
    refuseWith?: 'NXDOMAIN' | 'REFUSED';
    rateLimit?: { perSecond: number; burst: number } | null;
    cacheMaxEntries?: number;
  } | null;
  /** Transparent capture (src/capture): one listener per captured port; empty/undefined = none. */
  transparent?: TransparentMapping[];
}

export interface RunningEgress {
  proxy: ProxyServer;
  address: { address: string; port: number };
  holder: FilePolicyHolder;
  sink: FanoutSink;
  logger: Logger;
  context(): VetContext;
  store: DecisionStore | null;
  admin: AdminServer | null;
  dns: DnsFilterHandle | null;
  socks: { server: SocksServer; address: { address: string; port: number } } | null;
  /** The transparent-capture listeners and which captured port each stands for; null = none. */
  transparent: TransparentListener | null;
  /** The metrics registry; reading this loads prom-client and builds it (serve itself waits for the first scrape). */
  readonly metrics: Registry;
  /** The grants and, with the admin API, the approvals broker. */
  approvals: RunningApprovals;
  close(): Promise<void>;
}

/** Assemble and start: policy, guard, resolver, sinks, proxy listener. Throws (before listening) on bad config. */
export async function startEgress(cfg: EgressConfig): Promise<RunningEgress> {
  const logger = cfg.logger ?? pino({ level: 'info' }, pino.destination(2));
  const listen = parseListen(cfg.listen);
  // Before the policy: a bad grants file stops the start with its file and line, like a bad policy.
  // Approvals are held only where someone can decide them: with the admin API.
  const approvals = startApprovals(cfg.approvals ?? {}, { dataDir: cfg.store?.dataDir, decidable: !!cfg.admin, logger, rebuild: () => holder.rebuild('grants') });
  const holder = new FilePolicyHolder(
    cfg.policyFile,
    cfg.flags,
    (e) => {
      if (e.ok) logger.info({ trigger: e.trigger, policyHash: e.hash }, 'policy reloaded');
      else logger.error({ trigger: e.trigger, error: e.error }, 'policy reload failed; keeping the running policy');
    },
    { inspectCa: !!cfg.inspect?.caFile, settleMs: cfg.policySettleMs, transform: approvals.transform },
  );
  const inspector = await startInspector(cfg.inspect, holder.current().spec);
  for (const w of (holder.current() as CompiledPolicy & { warnings?: string[] }).warnings ?? []) logger.warn(w);

  const resolver = createResolver({ servers: cfg.dnsServers.length ? cfg.dnsServers : undefined, timeoutMs: cfg.limits?.dnsTimeoutMs ?? 5_000 });
  const self: { address: string; port: number }[] = [...(cfg.guardSelf ?? [])];
  const makeContext = (policy: CompiledPolicy): VetContext => ({
    policy,
    guard: new AddressGuard({ exempt: policy.spec.guardExempt, self }),
    resolver,
    approvals: approvals.broker,
  });
  let ctx = makeContext(holder.current());
  holder.onChange((p) => {
    ctx = makeContext(p);
  });

  const sinks: DecisionSink[] = [...(cfg.sinks ?? [])];
  const jsonLines = cfg.logFile !== null ? new JsonLinesSink(cfg.logFile, { logger, encode: recordEncoder(cfg.recordFormat) }) : null;
  if (jsonLines) sinks.unshift(jsonLines);
  const store = cfg.store
    ? await createStoreWriter({
        location: cfg.store.location,
        dataDir: cfg.store.dataDir,
        replica: cfg.store.replica,
        retentionMs: cfg.store.retentionMs,
        maxBytes: cfg.store.maxBytes,
        maxMemory: cfg.store.maxMemory,
        logger,
      })
    : null;
  if (store) sinks.push(store);
  // prom-client is loaded on the first scrape (or the first read of `metrics`), not at start.
  const registry = new LazyRegistry();
  let proxyRef: ProxyServer | null = null;
  let socksRef: SocksServer | null = null;
  sinks.push(
    new DecisionMetrics({
      registry,
      // The gauges count every front door: HTTP, SOCKS5 and transparent connections and tunnels alike.
      proxyStats: () => {
        const none = { activeConnections: 0, activeTunnels: 0 };
        const all = [proxyRef?.stats() ?? none, socksRef?.stats() ?? none, transparent?.stats() ?? none];
        return { activeConnections: all.reduce((n, x) => n + x.activeConnections, 0), activeTunnels: all.reduce((n, x) => n + x.activeTunnels, 0) };
      },
      storeStats: store ? () => store.stats() : undefined,
      policy: holder,
    }),
  );
  jsonLines?.registerMetrics(registry);
  if (cfg.firewallMetrics) {
    const tool = cfg.firewallMetrics;
    const { registerFirewallMetrics } = await import('./firewall-metrics.js');
    registry.define((_prom, r) => registerFirewallMetrics(r, tool));
  }
  let fleetAlerts: FleetSpikeFeed | null = null;
  let alertSettings: AlertSettings | null = null;
  if (cfg.alerts !== false) {
    const recent = new RecentAlerts();
    const detector = new SpikeDetector({
      ...(cfg.alerts ?? {}),
      onAlert: (a) => recent.push(a),
      registry,
      // The detector writes the one warn line itself (escaped, one duration format).
      logger,
    });
    alertSettings = { recent, ...detector.settings };
    // A shared store: one replica at a time (the lock holder) feeds every replica's stored denials to
    // its detector, so a spike split across replicas is seen, and alerted once.
    if (store && isFleetStore(store)) fleetAlerts = new FleetSpikeFeed(store, detector);
    else sinks.push(detector);
  }
  const sink = new FanoutSink(sinks);

  // Before any listener: a token file that fails its checks stops the start, like a bad policy.
  let adminAuth;
  try {
    adminAuth = cfg.admin && cfg.store ? resolveAdminAuth(cfg.admin, cfg.store.dataDir) : null;
  } catch (err) {
    await sink.close();
    throw err;
  }

  let tls: ConstructorParameters<typeof ProxyServer>[0]['tls'];
  if (cfg.tls) {
    tls = {
      cert: readFileSync(cfg.tls.certFile),
      key: readFileSync(cfg.tls.keyFile),
      clientCa: cfg.tls.clientCaFile ? readFileSync(cfg.tls.clientCaFile) : undefined,
    };
  }
  const proxy = new ProxyServer({ context: () => ctx, sink, logger, limits: cfg.limits, record: { logQuery: cfg.logQuery ?? false }, tls, inspector });
  proxyRef = proxy;
  let admin: AdminServer | null = null;
  let dns: DnsFilterHandle | null = null;
  let socks: RunningEgress['socks'] = null;
  let transparent: TransparentListener | null = null;
  let address: { address: string; port: number };
  try {
    address = await proxy.listen(listen.host, listen.port);
    // The guard refuses the proxy's own listeners even where a range exemption would let their address through.
    self.push({ address: address.address, port: address.port });
    if (cfg.socks) {
      const l = parseListen(cfg.socks.listen);
      // Each capture front door is loaded only when its listener is configured.
      const { SocksServer } = await import('../capture/socks5.js');
      const server = new SocksServer({ context: () => ctx, sink, logger, limits: cfg.limits, inspector });
      socks = { server, address: await server.listen(l.host, l.port) };
      socksRef = server;
      self.push({ address: socks.address.address, port: socks.address.port });
    }
    if (cfg.admin) {
      if (!store) throw new Error('the admin API serves the decision store: it cannot run with the store off');
      admin = await startLazyAdmin({
        listen: cfg.admin.listen,
        token: adminAuth?.token,
        viewerToken: cfg.admin.viewerToken,
        alerts: alertSettings,
        open: adminAuth?.open,
        metricsAuth: cfg.admin.metricsAuth,
        hosts: cfg.admin.hosts,
        store,
        policy: holder,
        metricsRegistry: registry,
        ready: () => proxy.listening,
        transparent: () => transparent?.bindings ?? [],
        logger,
        approvals: approvals.broker ? { broker: approvals.broker, grants: approvals.grants, subscribe: approvals.subscribe } : undefined,
      });
      self.push({ address: admin.address, port: admin.port });
      if (adminAuth) logAdminAuth(adminAuth, logger);
    }
    if (cfg.dns && cfg.dns.listen.length) {
      // The resolver and dns-packet are loaded only for a DNS listener.
      const { startDnsFilter } = await import('../dns/index.js');
      dns = await startDnsFilter({
        listen: cfg.dns.listen,
        upstreams: cfg.dnsServers,
        policy: () => ctx.policy,
        guard: () => ctx.guard,
        sink,
        refuseWith: cfg.dns.refuseWith,
        rateLimit: cfg.dns.rateLimit,
        cacheMaxEntries: cfg.dns.cacheMaxEntries,
        upstreamTimeoutMs: cfg.limits?.dnsTimeoutMs,
        logger,
        approvals: () => approvals.broker,
        approvalTimeoutMs: approvals.dnsTimeoutMs,
      });
      for (const l of dns.listeners) self.push({ address: l.address, port: l.port });
    }
    if (cfg.transparent?.length) {
      const { TransparentListener } = await import('../capture/transparent.js');
      transparent = new TransparentListener({ context: () => ctx, sink, logger, limits: cfg.limits, mappings: cfg.transparent });
      for (const b of await transparent.listen()) {
        self.push({ address: b.address, port: b.port });
        logger.info({ capturedPort: b.capturedPort, listen: formatListen(b) }, `agent-egress transparent listener for port ${b.capturedPort} on ${formatListen(b)}`);
      }
    }
  } catch (err) {
    // Never run half-configured: whatever started is stopped again, and the caller exits non-zero.
    await admin?.close().catch(() => undefined);
    await dns?.close().catch(() => undefined);
    await socks?.server.close(0).catch(() => undefined);
    await transparent?.close(0).catch(() => undefined);
    await proxy.close(0).catch(() => undefined);
    await approvals.close();
    await sink.close();
    throw err;
  }
  ctx = makeContext(holder.current());

  const policy = holder.current().spec;
  if (!isLoopbackHost(listen.host) && !policy.requireAuth && !cfg.tls?.clientCaFile) {
    logger.warn(
      { listen: formatListen(address) },
      'LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT REQUIRED CREDENTIALS: anyone who can reach this port can use the proxy; set require_auth: true in the policy or use --client-ca',
    );
  }
  if (socks && !isLoopbackHost(socks.address.address) && !policy.requireAuth) {
    // Client certificates do not exist on SOCKS5: only require_auth protects a reachable SOCKS port.
    logger.warn(
      { socks: formatListen(socks.address) },
      'SOCKS5 LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT REQUIRED CREDENTIALS: anyone who can reach this port can use the proxy; set require_auth: true in the policy',
    );
  }
  if (cfg.watchMs && cfg.policyFile) holder.watch(cfg.watchMs);
  // Memory back to the idle figure after load (src/runtime/idle-reclaim.ts).
  const stopReclaim = new IdleReclaimer().start();
  if (cfg.watchMs) approvals.grants.watch(cfg.watchMs);
  fleetAlerts?.start();

  let closing: Promise<void> | null = null;
  return {
    proxy,
    address,
    holder,
    sink,
    logger,
    context: () => ctx,
    store,
    admin,
    dns,
    socks,
    transparent,
    get metrics() {
      return registry.registry();
    },
    approvals,
    close() {
      closing ??= (async () => {
        stopReclaim();
        holder.close();
        // Held requests are denied at once, so draining does not wait out their approval timeout.
        await approvals.close();
        await fleetAlerts?.close();
        await Promise.all([proxy.close(), dns?.close(), socks?.server.close(), transparent?.close()]);
        await admin?.close();
        // Last: every record the proxy and resolver produced while draining is in the store before exit.
        await sink.close();
      })();
      return closing;
    },
  };
}
