import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';
import type { StoreStats } from './store/types.js';
import type { PolicyHolder } from '../policy/holder.js';

export interface ProxyStats {
  activeConnections: number;
  activeTunnels: number;
}

export interface DecisionMetricsOptions {
  /** Its own registry, never prom-client's global one (tests and several proxies in one process). */
  registry: Registry;
  proxyStats?: () => ProxyStats;
  storeStats?: () => StoreStats;
  policy?: PolicyHolder;
  /** Distinct agent / rule label values kept before the rest are folded into 'other'. Default 200. */
  maxLabelValues?: number;
}

/** Caps a label's distinct values so a flood of agent or rule names cannot blow up the series count. */
export class LabelCap {
  private readonly seen = new Set<string>();
  constructor(private readonly max: number) {}
  value(v: string | null): string {
    const s = v ?? '';
    if (this.seen.has(s)) return s;
    if (this.seen.size >= this.max) return 'other';
    this.seen.add(s);
    return s;
  }
}

// Latency buckets in seconds, from a cached lookup to a slow upstream.
const LATENCY = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Prometheus metrics fed by decision records (a DecisionSink) plus gauges read at scrape time from
 * the proxy, the store and the policy holder.
 */
export class DecisionMetrics implements DecisionSink {
  readonly registry: Registry;
  private readonly agents: LabelCap;
  private readonly rules: LabelCap;
  private readonly decisions: Counter<'verdict' | 'reason' | 'agent' | 'rule' | 'mode'>;
  private readonly bytes: Counter<'direction'>;
  private readonly dns: Histogram<string>;
  private readonly connect: Histogram<string>;

  constructor(opts: DecisionMetricsOptions) {
    const registers = [opts.registry];
    this.registry = opts.registry;
    this.agents = new LabelCap(opts.maxLabelValues ?? 200);
    this.rules = new LabelCap(opts.maxLabelValues ?? 200);
    this.decisions = new Counter({
      name: 'agent_egress_decisions_total',
      help: 'Decisions by verdict, reason, agent, rule and mode (agent/rule capped, the rest as "other")',
      labelNames: ['verdict', 'reason', 'agent', 'rule', 'mode'],
      registers,
    });
    this.bytes = new Counter({ name: 'agent_egress_bytes_total', help: 'Bytes relayed, by direction (up = client to upstream)', labelNames: ['direction'], registers });
    this.dns = new Histogram({ name: 'agent_egress_dns_duration_seconds', help: 'DNS resolution time per decision', buckets: LATENCY, registers });
    this.connect = new Histogram({ name: 'agent_egress_connect_duration_seconds', help: 'Upstream connect time per decision', buckets: LATENCY, registers });
    const gauge = (name: string, help: string, read: () => number | undefined) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const v = read();
          if (v !== undefined) this.set(v);
        },
      });
    const p = opts.proxyStats;
    const s = opts.storeStats;
    const h = opts.policy;
    gauge('agent_egress_active_connections', 'Client connections open now', () => p?.().activeConnections);
    gauge('agent_egress_active_tunnels', 'CONNECT tunnels open now', () => p?.().activeTunnels);
    gauge('agent_egress_store_pending_records', 'Decision records accepted but not yet committed to the store', () => s?.().pending);
    gauge('agent_egress_store_lag_seconds', 'Age of the oldest uncommitted decision record', () => (s ? s().lagMs / 1000 : undefined));
    gauge('agent_egress_store_dropped_records', 'Decision records the store lost (failure or overflow) since start', () => s?.().dropped);
    gauge('agent_egress_store_written_records', 'Decision records committed since start', () => s?.().written);
    gauge('agent_egress_store_failing', '1 while the store cannot write', () => (s ? Number(s().failing) : undefined));
    gauge('agent_egress_store_degraded', '1 while the store cannot take records now (failing, or a spool waits); the proxy still serves', () => (s ? Number(s().degraded ?? s().failing) : undefined));
    gauge('agent_egress_store_spooled_records', 'Of the pending records, those in the local spool file (a PostgreSQL store during an outage)', () => (s ? (s().spooled ?? 0) : undefined));
    gauge('agent_egress_policy_reloads', 'Successful policy reloads since start', () => h?.state().reloads);
    gauge('agent_egress_policy_reload_failures', 'Failed policy reloads since start', () => h?.state().reloadFailures);
    gauge('agent_egress_policy_loaded_timestamp_seconds', 'When the active policy was loaded', () => {
      const t = h ? Date.parse(h.state().loadedAt) : NaN;
      return Number.isFinite(t) ? t / 1000 : undefined;
    });
  }

  write(r: DecisionRecord): void {
    try {
      this.decisions.inc({ verdict: r.verdict, reason: r.reason, agent: this.agents.value(r.agent), rule: this.rules.value(r.rule), mode: r.mode });
      if (r.bytesUp > 0) this.bytes.inc({ direction: 'up' }, r.bytesUp);
      if (r.bytesDown > 0) this.bytes.inc({ direction: 'down' }, r.bytesDown);
      if (r.timings?.dnsMs != null) this.dns.observe(r.timings.dnsMs / 1000);
      if (r.timings?.connectMs != null) this.connect.observe(r.timings.connectMs / 1000);
    } catch {
      /* a sink never throws into the proxy */
    }
  }

  async close(): Promise<void> {}
}
