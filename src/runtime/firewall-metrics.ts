import { Gauge, type Registry } from 'prom-client';
import { checkIptables, checkNftables } from '../firewall/apply.js';

/**
 * Exports the companion rule's kernel counters with the proxy's metrics, read at scrape time, for a
 * proxy on the same host (and network namespace) as the rules. A failed read reports "not in place"
 * rather than failing the scrape: the metric itself is what should alert.
 */
export function registerFirewallMetrics(registry: Registry, tool: 'nftables' | 'iptables'): void {
  const inPlace = new Gauge({ name: 'agent_egress_firewall_in_place', help: 'Companion firewall rules are in place (1) or not (0), per family', labelNames: ['tool', 'family'], registers: [] });
  const packets = new Gauge({ name: 'agent_egress_firewall_refused_packets', help: 'Packets the companion firewall refused (kernel counter), per family', labelNames: ['tool', 'family'], registers: [] });
  const bytes = new Gauge({ name: 'agent_egress_firewall_refused_bytes', help: 'Bytes the companion firewall refused (kernel counter), per family', labelNames: ['tool', 'family'], registers: [] });
  // One read serves the three gauges of a scrape.
  let pending: Promise<void> | null = null;
  const read = () =>
    (pending ??= (async () => {
      try {
        const st = tool === 'nftables' ? await checkNftables() : await checkIptables();
        for (const f of st.families) {
          const l = { tool, family: `ipv${f.family}` };
          inPlace.set(l, f.inPlace ? 1 : 0);
          packets.set(l, f.refused.packets);
          bytes.set(l, f.refused.bytes);
        }
      } catch {
        for (const family of ['ipv4', 'ipv6']) inPlace.set({ tool, family }, 0);
      }
    })().finally(() => setTimeout(() => (pending = null), 0)));
  for (const g of [inPlace, packets, bytes]) {
    (g as unknown as { collect: () => Promise<void> }).collect = read;
    registry.registerMetric(g);
  }
}
