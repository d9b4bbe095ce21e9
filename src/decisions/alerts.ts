import { defineMetrics, type MetricsTarget } from './lazy-registry.js';
import { weightOf, type DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';
import { displaySafe } from './display.js';
import { WebhookSender, type WebhookTarget } from './webhook.js';

export interface SpikeAlert {
  type: 'deny_spike';
  level: 'warn';
  time: string;
  agent: string | null;
  /** Denies in the window when the alert fired. */
  denies: number;
  windowMs: number;
  threshold: number;
  /** The agent's baseline (EWMA of denies per window) before the spike. */
  baseline: number;
  multiplier: number;
  topDestinations: { host: string; port: number | null; count: number }[];
}

export interface SpikeOptions {
  /** Sliding window length. Default 60 s. */
  windowMs?: number;
  /** Minimum denies in the window to count as a spike. Default 20. */
  threshold?: number;
  /** Also require denies > multiplier x baseline. Default 3. */
  multiplier?: number;
  /** EWMA smoothing of the per-window deny count (0..1). Default 0.2. */
  alpha?: number;
  /** Re-arm only after the window's denies fall to threshold x rearmRatio. Default 0.5. */
  rearmRatio?: number;
  /** Agents tracked; the least recently seen is evicted. Default 1000. */
  maxAgents?: number;
  webhook?: WebhookTarget;
  registry?: MetricsTarget;
  /** Also called with each alert (exact values), besides the one warn line written to `logger`. */
  onAlert?: (alert: SpikeAlert) => void;
  logger?: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

interface AgentState {
  /** Deny times (ms) and destinations inside the window, oldest first. */
  events: { t: number; host: string; port: number | null; w: number }[];
  /** Denies the events stand for (a folded record counts its repeats). */
  total: number;
  baseline: number;
  /** End of the window period the baseline last absorbed. */
  periodEnd: number;
  periodCount: number;
  firing: boolean;
}

/** A window as the flags spell it: 60s, 1.5s, 250ms. */
function formatWindow(ms: number): string {
  return ms < 1000 ? `${ms}ms` : `${ms / 1000}s`;
}

/**
 * The alert as the operational log shows it: the log is read on terminals, so recorded names are
 * displaySafe there. The webhook and onAlert get the exact values (the webhook as safeJson).
 */
function displayAlert(a: SpikeAlert): SpikeAlert {
  return {
    ...a,
    agent: a.agent === null ? null : displaySafe(a.agent),
    topDestinations: a.topDestinations.map((d) => ({ ...d, host: displaySafe(d.host) })),
  };
}

/**
 * Per-agent deny spike detector. A spike needs both: denies in the sliding window >= threshold and
 * > multiplier x the agent's own baseline (an EWMA of denies per window, updated once per window
 * period and not while firing, so a long attack does not become the new normal). It fires once,
 * then re-arms when the window drops below threshold x rearmRatio (hysteresis).
 */
export class SpikeDetector implements DecisionSink {
  private readonly o: Required<Omit<SpikeOptions, 'webhook' | 'registry' | 'onAlert' | 'logger'>>;
  private readonly agents = new Map<string, AgentState>();
  /** Alerts fired per agent ('' for none), in first-fired order, read by the metric at scrape time. */
  private readonly fired = new Map<string, number>();
  private readonly webhook: WebhookSender | null;
  private closed = false;

  constructor(private readonly opts: SpikeOptions = {}) {
    this.o = {
      windowMs: opts.windowMs ?? 60_000,
      threshold: opts.threshold ?? 20,
      multiplier: opts.multiplier ?? 3,
      alpha: opts.alpha ?? 0.2,
      rearmRatio: opts.rearmRatio ?? 0.5,
      maxAgents: opts.maxAgents ?? 1000,
    };
    this.webhook = opts.webhook ? new WebhookSender(opts.webhook, opts.logger, 'spike alert webhook failed') : null;
    const fired = this.fired;
    if (opts.registry) {
      defineMetrics(opts.registry, (prom, registry) => {
        new prom.Counter({
          name: 'agent_egress_spike_alerts_total',
          help: 'Deny spike alerts fired, by agent',
          labelNames: ['agent'],
          registers: [registry],
          collect() {
            this.reset();
            for (const [agent, n] of fired) this.inc({ agent }, n);
          },
        });
      });
    }
  }

  /** The thresholds in force (defaults filled in), for the dashboard's chart. */
  get settings(): { threshold: number; windowMs: number } {
    return { threshold: this.o.threshold, windowMs: this.o.windowMs };
  }

  write(r: DecisionRecord): void {
    if (this.closed || r.verdict !== 'deny') return;
    try {
      this.observe(r, Date.parse(r.time) || Date.now());
    } catch {
      /* never throw into the proxy */
    }
  }

  private observe(r: DecisionRecord, now: number): void {
    const key = r.agent ?? '';
    let st = this.agents.get(key);
    if (st) this.agents.delete(key); // re-insert: Map order doubles as LRU
    else {
      if (this.agents.size >= this.o.maxAgents) this.agents.delete(this.agents.keys().next().value as string);
      st = { events: [], total: 0, baseline: 0, periodEnd: now + this.o.windowMs, periodCount: 0, firing: false };
    }
    this.agents.set(key, st);
    // Fold finished periods into the baseline (idle periods count as zero).
    while (now >= st.periodEnd) {
      if (!st.firing) st.baseline = st.baseline * (1 - this.o.alpha) + st.periodCount * this.o.alpha;
      st.periodCount = 0;
      st.periodEnd += this.o.windowMs;
      if (st.periodEnd + this.o.windowMs * 50 < now) st.periodEnd = now + this.o.windowMs; // long idle: stop looping
    }
    const w = weightOf(r);
    st.periodCount += w;
    st.events.push({ t: now, host: r.host, port: r.port, w });
    st.total += w;
    const from = now - this.o.windowMs;
    let drop = 0;
    while (drop < st.events.length && st.events[drop].t <= from) st.total -= st.events[drop++].w;
    if (drop) st.events.splice(0, drop);
    const n = st.total;
    if (st.firing) {
      if (n <= this.o.threshold * this.o.rearmRatio) st.firing = false;
      return;
    }
    if (n >= this.o.threshold && n > this.o.multiplier * st.baseline) {
      st.firing = true;
      this.fire(r.agent, st, now);
    }
  }

  /** Call periodically (or rely on later denies) to re-arm agents whose window emptied. */
  tick(now = Date.now()): void {
    for (const st of this.agents.values()) {
      if (!st.firing) continue;
      const n = st.events.reduce((sum, e) => (e.t > now - this.o.windowMs ? sum + e.w : sum), 0);
      if (n <= this.o.threshold * this.o.rearmRatio) st.firing = false;
    }
  }

  private fire(agent: string | null, st: AgentState, now: number): void {
    const counts = new Map<string, { host: string; port: number | null; count: number }>();
    for (const e of st.events) {
      const k = `${e.host}:${e.port}`;
      const c = counts.get(k);
      if (c) c.count += e.w;
      else counts.set(k, { host: e.host, port: e.port, count: e.w });
    }
    const alert: SpikeAlert = {
      type: 'deny_spike',
      level: 'warn',
      time: new Date(now).toISOString(),
      agent,
      denies: st.total,
      windowMs: this.o.windowMs,
      threshold: this.o.threshold,
      baseline: Math.round(st.baseline * 100) / 100,
      multiplier: this.o.multiplier,
      topDestinations: [...counts.values()].sort((a, b) => b.count - a.count).slice(0, 10),
    };
    const k = agent ?? '';
    this.fired.set(k, (this.fired.get(k) ?? 0) + 1);
    try {
      this.opts.logger?.warn({ alert: displayAlert(alert) }, `deny spike: agent ${agent === null ? '(anonymous)' : displaySafe(agent)} had ${alert.denies} denies in ${formatWindow(this.o.windowMs)}`);
      this.opts.onAlert?.(alert);
    } catch {
      /* reporting must not throw */
    }
    this.webhook?.send(alert);
  }

  /** Waits for webhook deliveries in flight (bounded by their retries and timeouts). */
  async close(): Promise<void> {
    this.closed = true;
    await this.webhook?.close();
  }
}
