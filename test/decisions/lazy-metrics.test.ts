import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Registry } from 'prom-client';
import { DecisionMetrics, LabelCap } from '../../src/decisions/metrics.js';
import { LazyRegistry } from '../../src/decisions/lazy-registry.js';
import { SpikeDetector } from '../../src/decisions/alerts.js';
import { JsonLinesSink } from '../../src/decisions/json-sink.js';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { rec, tempDir } from './helpers.js';

const LATENCY = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The per-record prom-client metrics DecisionMetrics used to keep: what the exposition must stay equal to. */
function reference(registry: Registry, max: number) {
  const agents = new LabelCap(max);
  const rules = new LabelCap(max);
  const registers = [registry];
  const decisions = new Counter({ name: 'agent_egress_decisions_total', help: 'Decisions by verdict, reason, agent, rule and mode (agent/rule capped, the rest as "other")', labelNames: ['verdict', 'reason', 'agent', 'rule', 'mode'], registers });
  const bytes = new Counter({ name: 'agent_egress_bytes_total', help: 'Bytes relayed, by direction (up = client to upstream)', labelNames: ['direction'], registers });
  const dns = new Histogram({ name: 'agent_egress_dns_duration_seconds', help: 'DNS resolution time per decision', buckets: LATENCY, registers });
  const connect = new Histogram({ name: 'agent_egress_connect_duration_seconds', help: 'Upstream connect time per decision', buckets: LATENCY, registers });
  return (r: DecisionRecord) => {
    decisions.inc({ verdict: r.verdict, reason: r.reason, agent: agents.value(r.agent), rule: rules.value(r.rule), mode: r.mode });
    if (r.bytesUp > 0) bytes.inc({ direction: 'up' }, r.bytesUp);
    if (r.bytesDown > 0) bytes.inc({ direction: 'down' }, r.bytesDown);
    if (r.timings?.dnsMs != null) dns.observe(r.timings.dnsMs / 1000);
    if (r.timings?.connectMs != null) connect.observe(r.timings.connectMs / 1000);
  };
}

const FAMILIES = ['agent_egress_decisions_total', 'agent_egress_bytes_total', 'agent_egress_dns_duration_seconds', 'agent_egress_connect_duration_seconds'];

/** Records with every kind of value a label or a histogram sees, odd label values included. */
function records(): DecisionRecord[] {
  const out: DecisionRecord[] = [];
  const agents = ['a', 'b', null, 'with "quote"\\and\nnewline', 'a\u0000b', 'a', 'c', 'd', 'e'];
  for (let i = 0; i < 400; i++) {
    const agent = agents[i % agents.length];
    out.push(
      rec({
        agent,
        verdict: i % 3 ? 'allow' : 'deny',
        reason: i % 3 ? 'rule_allow' : 'no_rule',
        rule: i % 3 ? `r${i % 5}` : null,
        mode: i % 7 ? 'enforce' : 'report',
        bytesUp: i % 4 ? i * 13 : 0,
        bytesDown: i % 6 ? i * 1031 : 0,
        timings: { dnsMs: i % 5 ? (i * 0.37) % 30 : null, connectMs: i % 2 ? (i * 7.13) % 12_000 : null, totalMs: 1 },
      }),
    );
  }
  return out;
}

async function exposition(registry: Registry): Promise<string> {
  return (await Promise.all(FAMILIES.map((n) => registry.getSingleMetricAsString(n)))).join('\n');
}

describe('DecisionMetrics on a lazy registry', () => {
  it('exports exactly what per-record prom-client metrics export, in every format', async () => {
    const lazy = new LazyRegistry();
    const m = new DecisionMetrics({ registry: lazy, maxLabelValues: 4 });
    const ref = new Registry();
    const feed = reference(ref, 4);
    const all = records();
    // Half before the registry is built, half after: the counts carry over.
    for (const r of all.slice(0, 200)) (m.write(r), feed(r));
    expect(lazy.isBuilt).toBe(false);
    const built = lazy.registry();
    for (const r of all.slice(200)) (m.write(r), feed(r));
    expect(await exposition(built)).toBe(await exposition(ref));
    const json = async (reg: Registry) => (await reg.getMetricsAsJSON()).filter((x) => FAMILIES.includes(x.name));
    expect(await json(built)).toEqual(await json(ref));
    built.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    ref.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    const open = (t: string) => t.split('\n').filter((l) => FAMILIES.some((f) => l.includes(f.replace(/_total$/, ''))));
    expect(open(await built.metrics())).toEqual(open(await ref.metrics()));
    // Scraping twice reports the same, and later records are added to it.
    built.setContentType(Registry.PROMETHEUS_CONTENT_TYPE);
    ref.setContentType(Registry.PROMETHEUS_CONTENT_TYPE);
    expect(await exposition(built)).toBe(await exposition(ref));
  });

  it('exports the zero histograms and label-less families of a proxy that recorded nothing', async () => {
    const lazy = new LazyRegistry();
    new DecisionMetrics({ registry: lazy });
    const ref = new Registry();
    reference(ref, 200);
    expect(await exposition(lazy.registry())).toBe(await exposition(ref));
  });

  it('builds prom-client only when asked, with every metric registered in the same order', async () => {
    const lazy = new LazyRegistry();
    const d = new SpikeDetector({ windowMs: 10_000, threshold: 2, multiplier: 1, registry: lazy });
    const { dir, cleanup } = tempDir('ae-lazy-');
    const sink = new JsonLinesSink(`${dir}/d.log`);
    sink.registerMetrics(lazy);
    new DecisionMetrics({ registry: lazy, storeStats: () => ({ pending: 1, dropped: 2, written: 3, lagMs: 0, failing: false, retained: 0 }) });
    for (let i = 0; i < 3; i++) d.write(rec({ agent: 'bot', verdict: 'deny', reason: 'no_rule', rule: null, time: new Date(Date.parse('2025-06-01T00:00:00Z') + i).toISOString() }));
    expect(lazy.isBuilt).toBe(false);
    const text = await lazy.metrics();
    expect(lazy.isBuilt).toBe(true);
    expect(text).toMatch(/^agent_egress_spike_alerts_total\{agent="bot"\} 1$/m);
    expect(text).toMatch(/^agent_egress_decision_log_dropped_records_total 0$/m);
    expect(text).toMatch(/^agent_egress_store_written_records 3$/m);
    const order = [...text.matchAll(/^# TYPE (\S+)/gm)].map((x) => x[1]);
    expect(order.slice(0, 4)).toEqual(['agent_egress_spike_alerts_total', 'agent_egress_decision_log_dropped_records_total', 'agent_egress_decisions_total', 'agent_egress_bytes_total']);
    expect(lazy.contentType).toBe(Registry.PROMETHEUS_CONTENT_TYPE);
    await sink.close();
    cleanup();
  });
});
