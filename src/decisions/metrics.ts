import type * as Prom from 'prom-client';
import type { Registry } from 'prom-client';
import { defineMetrics, type MetricsTarget, type PromClient } from './lazy-registry.js';
import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';
import type { StoreStats } from './store/types.js';
import type { PolicyHolder } from '../policy/holder.js';

export interface ProxyStats {
  activeConnections: number;
  activeTunnels: number;
}

export interface DecisionMetricsOptions {
  /** Its own registry, never prom-client's global one (tests and several proxies in one process); lazy in serve. */
  registry: MetricsTarget;
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

const DECISION_LABELS = ['verdict', 'reason', 'agent', 'rule', 'mode'] as const;
type DecisionLabels = Record<(typeof DECISION_LABELS)[number], string>;

/**
 * Prometheus metrics fed by decision records (a DecisionSink) plus gauges read at scrape time from
 * the proxy, the store and the policy holder. Records are counted into plain fields (one string key and a
 * map lookup per record, where prom-client hashes a label object per call); the prom-client metrics read
 * them at scrape time, and with a LazyRegistry prom-client is not even loaded until the first scrape.
 */
export class DecisionMetrics implements DecisionSink {
  private readonly agents: LabelCap;
  private readonly rules: LabelCap;
  /** Decisions per label set, in first-seen order (the order prom-client would list them in). */
  private readonly decisions = new Map<string, { labels: DecisionLabels; n: number }>();
  /** Bytes by direction, a direction listed once it has counted anything. */
  private readonly bytes = new Map<'up' | 'down', number>();
  private readonly dns = new HistogramCounts(LATENCY);
  private readonly connect = new HistogramCounts(LATENCY);

  constructor(opts: DecisionMetricsOptions) {
    this.agents = new LabelCap(opts.maxLabelValues ?? 200);
    this.rules = new LabelCap(opts.maxLabelValues ?? 200);
    defineMetrics(opts.registry, (prom, registry) => this.define(prom, registry, opts));
  }

  private define(prom: PromClient, registry: Registry, opts: DecisionMetricsOptions): void {
    const registers = [registry];
    const decisions = this.decisions;
    const bytes = this.bytes;
    new prom.Counter({
      name: 'agent_egress_decisions_total',
      help: 'Decisions by verdict, reason, agent, rule and mode (agent/rule capped, the rest as "other")',
      labelNames: DECISION_LABELS,
      registers,
      collect() {
        this.reset();
        for (const d of decisions.values()) this.inc(d.labels, d.n);
      },
    });
    new prom.Counter({
      name: 'agent_egress_bytes_total',
      help: 'Bytes relayed, by direction (up = client to upstream)',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        for (const [direction, n] of bytes) this.inc({ direction }, n);
      },
    });
    registry.registerMetric(this.dns.metric(prom, 'agent_egress_dns_duration_seconds', 'DNS resolution time per decision'));
    registry.registerMetric(this.connect.metric(prom, 'agent_egress_connect_duration_seconds', 'Upstream connect time per decision'));
    const gauge = (name: string, help: string, read: () => number | undefined) =>
      new prom.Gauge({
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
      const agent = this.agents.value(r.agent);
      const rule = this.rules.value(r.rule);
      // NUL cannot be told apart from another label value's characters only if it is in one: label values
      // are recorded strings, so the key also carries each value's length.
      const key = `${r.verdict}\0${r.reason}\0${agent.length}:${agent}\0${rule.length}:${rule}\0${r.mode}`;
      const d = this.decisions.get(key);
      if (d) d.n++;
      else this.decisions.set(key, { labels: { verdict: r.verdict, reason: r.reason, agent, rule, mode: r.mode }, n: 1 });
      if (r.bytesUp > 0) this.bytes.set('up', (this.bytes.get('up') ?? 0) + r.bytesUp);
      if (r.bytesDown > 0) this.bytes.set('down', (this.bytes.get('down') ?? 0) + r.bytesDown);
      if (r.timings?.dnsMs != null) this.dns.observe(r.timings.dnsMs / 1000);
      if (r.timings?.connectMs != null) this.connect.observe(r.timings.connectMs / 1000);
    } catch {
      /* a sink never throws into the proxy */
    }
  }

  async close(): Promise<void> {}
}

/**
 * An unlabelled histogram counted in plain fields, exported as prom-client's Histogram exports it: the
 * same buckets (cumulative, then +Inf), the same sum (added up in the same order, so the same float), the
 * same count, for the text format, OpenMetrics and the cluster's JSON alike.
 */
export class HistogramCounts {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }

  /** Non-finite values are not counted (prom-client refuses them). */
  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += v;
    this.count++;
  }

  /**
   * A prom-client Histogram whose values are these counts: a real Histogram (so the registry formats it as
   * it always has) with its one series replaced at collect time.
   */
  metric(prom: PromClient, name: string, help: string): Prom.Histogram {
    const self = this;
    const h = new prom.Histogram({
      name,
      help,
      buckets: [...this.bounds],
      registers: [],
      collect() {
        // Like an unlabelled Histogram, the one series is there (all zero) before anything is observed.
        this.reset();
        this.zero({});
        const series = Object.values((this as unknown as { hashMap: Record<string, HistogramSeries> }).hashMap)[0];
        self.bounds.forEach((bound, i) => (series.bucketValues[bound] = self.counts[i]));
        series.sum = self.sum;
        series.count = self.count;
      },
    });
    return h;
  }
}

interface HistogramSeries {
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}
