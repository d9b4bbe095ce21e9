import { describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { SpikeDetector, type SpikeAlert } from '../../src/decisions/alerts.js';
import { DecisionMetrics } from '../../src/decisions/metrics.js';
import { rec } from './helpers.js';

const T0 = Date.parse('2025-05-01T00:00:00Z');
const deny = (agent: string, ms: number, host = 'probe.example') =>
  rec({ agent, time: new Date(T0 + ms).toISOString(), verdict: 'deny', reason: 'no_rule', rule: null, host });

describe('SpikeDetector', () => {
  it('fires once per spike, re-arms after it subsides, and the webhook receives the alert', async () => {
    const bodies: SpikeAlert[] = [];
    let hits = 0;
    let server!: ReturnType<typeof createServer>;
    const got = new Promise<void>((resolve) => {
      const srv = createServer((req, res) => {
        hits++;
        let b = '';
        req.on('data', (d) => (b += d));
        req.on('end', () => {
          // First attempt fails, so the retry path is exercised.
          if (hits === 1) {
            res.statusCode = 503;
            res.end();
            return;
          }
          bodies.push(JSON.parse(b));
          res.end('ok');
          if (bodies.length === 2) resolve();
        });
      });
      server = srv;
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const registry = new Registry();
    const alerts: SpikeAlert[] = [];
    const d = new SpikeDetector({ windowMs: 10_000, threshold: 5, multiplier: 3, registry, onAlert: (a) => alerts.push(a), webhook: { url: `http://127.0.0.1:${port}/hook`, retries: 3, timeoutMs: 2000 } });
    // Quiet background for a while: 1 deny per window, which builds a small baseline.
    for (let i = 0; i < 5; i++) d.write(deny('bot', i * 10_000));
    expect(alerts).toHaveLength(0);
    // A burst of 30 denies within 3 s: one alert, not 26.
    for (let i = 0; i < 30; i++) d.write(deny('bot', 60_000 + i * 100, i % 2 ? 'a.evil' : 'b.evil'));
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ type: 'deny_spike', level: 'warn', agent: 'bot', denies: 5, threshold: 5 });
    // Other agents are independent and allowed traffic never counts.
    for (let i = 0; i < 30; i++) d.write({ ...deny('other', 60_000 + i * 10), verdict: 'allow', reason: 'rule_allow' });
    expect(alerts).toHaveLength(1);
    // Quiet for a while (window empties), then a second burst: a second alert.
    d.write(deny('bot', 200_000));
    for (let i = 0; i < 10; i++) d.write(deny('bot', 230_000 + i * 100));
    expect(alerts).toHaveLength(2);
    expect(alerts[1].topDestinations[0]).toMatchObject({ host: 'probe.example', count: 5 });
    await got;
    await d.close();
    server.close();
    expect(bodies.map((b) => b.agent)).toEqual(['bot', 'bot']);
    expect(hits).toBe(3);
    const text = await registry.metrics();
    expect(text).toMatch(/agent_egress_spike_alerts_total\{agent="bot"\} 2/);
  });

  it('does not fire when the agent always denies at this rate (baseline)', () => {
    const alerts: SpikeAlert[] = [];
    const d = new SpikeDetector({ windowMs: 10_000, threshold: 5, multiplier: 3, alpha: 0.5, onAlert: (a) => alerts.push(a) });
    // 4 denies per window for a long time, then 8 in a window: above threshold, under 3x baseline.
    for (let w = 0; w < 20; w++) for (let i = 0; i < 4; i++) d.write(deny('noisy', w * 10_000 + i * 2000));
    for (let i = 0; i < 8; i++) d.write(deny('noisy', 200_000 + i * 1000));
    expect(alerts).toHaveLength(0);
  });
});

describe('DecisionMetrics', () => {
  it('counts decisions, bytes and latencies, reads gauges at scrape time and caps label cardinality', async () => {
    const registry = new Registry();
    const m = new DecisionMetrics({
      registry,
      maxLabelValues: 3,
      proxyStats: () => ({ activeConnections: 4, activeTunnels: 2 }),
      storeStats: () => ({ pending: 7, dropped: 9, written: 100, lagMs: 1500, failing: true, retained: 0 }),
    });
    m.write(rec({ agent: 'a', bytesUp: 100, bytesDown: 1000, timings: { dnsMs: 3, connectMs: 40, totalMs: 50 } }));
    m.write(rec({ agent: 'a', verdict: 'deny', reason: 'no_rule', rule: null }));
    for (const a of ['b', 'c', 'd', 'e']) m.write(rec({ agent: a }));
    const text = await registry.metrics();
    expect(text).toContain('agent_egress_decisions_total{verdict="deny",reason="no_rule",agent="a",rule="",mode="enforce"} 1');
    expect(text).toMatch(/agent="other"/);
    expect(text).not.toMatch(/agent="e"/);
    expect(text).toContain('agent_egress_bytes_total{direction="up"} 150');
    expect(text).toContain('agent_egress_active_tunnels 2');
    expect(text).toContain('agent_egress_store_dropped_records 9');
    expect(text).toContain('agent_egress_store_lag_seconds 1.5');
    expect(text).toContain('agent_egress_dns_duration_seconds_count 6');
    expect(text).toContain('agent_egress_connect_duration_seconds_bucket{le="0.05"} 6');
  });
});
