import type { NormalizedHost } from '../net/host.js';
import type { CompiledPolicy, PortRange, RuleSpec } from './types.js';

/**
 * "On which ports would this agent be allowed to reach this host?", for deny messages that help
 * ("example.com is allowed on port 443 only"). It asks decide() itself, so it can never disagree with
 * the decision: a port's verdict changes only where some rule's port range starts or ends, so deciding
 * one port per stretch between those boundaries covers all 65535. Only the deny path calls this.
 */

/** Past this many stretches the hint is not worth its cost on a flood of denials: no hint. */
const MAX_STRETCHES = 2048;
/** The port an allow rule without `ports` gets (compile.ts). Its edges split the range like any other. */
const ALLOW_DEFAULT_PORT = 443;

const starts = new WeakMap<CompiledPolicy, readonly number[] | null>();

/** First port of every stretch over which no rule's port range starts or ends; computed once per policy. */
function stretchStarts(policy: CompiledPolicy): readonly number[] | null {
  const cached = starts.get(policy);
  if (cached !== undefined) return cached;
  const edges = new Set<number>([1, ALLOW_DEFAULT_PORT, ALLOW_DEFAULT_PORT + 1]);
  const add = (rules: readonly RuleSpec[]) => {
    for (const r of rules) {
      for (const [lo, hi] of r.ports ?? []) {
        edges.add(lo);
        if (hi < 65535) edges.add(hi + 1);
      }
    }
  };
  add(policy.spec.rules);
  for (const a of policy.spec.agents) add(a.rules);
  const sorted = [...edges].filter((p) => p >= 1 && p <= 65535).sort((a, b) => a - b);
  const out = sorted.length > MAX_STRETCHES ? null : Object.freeze(sorted);
  starts.set(policy, out);
  return out;
}

export interface PortsQuery {
  agent: string | null;
  host: NormalizedHost;
  /** Plain HTTP's method; undefined for CONNECT. */
  method?: string;
}

/**
 * The port ranges on which decide() allows this agent, host and method, merged and in order; [] when none.
 * null when the policy has too many distinct port edges to answer cheaply.
 */
export function allowedPorts(policy: CompiledPolicy, q: PortsQuery): PortRange[] | null {
  // Ports ignored: no allow rule matches the host (or the method) at any port, so none is allowed.
  const anyPort = policy.decide({ agent: q.agent, host: q.host, port: null, method: q.method });
  if (anyPort.verdict === 'deny' && (anyPort.reason === 'no_rule' || anyPort.reason === 'method_not_allowed')) return [];
  const s = stretchStarts(policy);
  if (s === null) return null;
  const out: [number, number][] = [];
  for (let i = 0; i < s.length; i++) {
    const lo = s[i];
    const hi = i + 1 < s.length ? s[i + 1] - 1 : 65535;
    const d = policy.decide({ agent: q.agent, host: q.host, port: lo, method: q.method });
    if (d.verdict !== 'allow') continue;
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === lo - 1) last[1] = hi;
    else out.push([lo, hi]);
  }
  return out;
}

/** Ranges as policy files write them: "443", "8000-8100". */
export function portItems(ranges: readonly PortRange[]): string[] {
  return ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`));
}

/** "443", "80 and 443", "80, 443 and 8000-8100" (at most `max` items, then "and N more"). */
export function formatPorts(ranges: readonly PortRange[], max = 8): string {
  const items = portItems(ranges);
  const shown = items.length > max ? [...items.slice(0, max), `${items.length - max} more`] : items;
  return shown.length === 1 ? shown[0] : `${shown.slice(0, -1).join(', ')} and ${shown[shown.length - 1]}`;
}

/** The sentence a refused agent reads: "example.com is allowed on port 443 only". */
export function portsHint(host: string, ranges: readonly PortRange[]): string {
  const single = ranges.length === 1 && ranges[0][0] === ranges[0][1];
  return `${host} is allowed on ${single ? 'port' : 'ports'} ${formatPorts(ranges)} only`;
}
