import { stringify } from 'yaml';
import { FirewallOptionError, type AllowedDest } from './options.js';

export interface KubernetesOptions {
  name: string;
  namespace: string;
  /** Labels that mark agent pods; the policy confines exactly these. */
  agentLabels: Record<string, string>;
  /** Labels of the proxy pods (a NetworkPolicy sees pod addresses after the Service is translated). */
  proxyLabels: Record<string, string>;
  proxyPorts: number[];
  /** Labels of the filtering DNS resolver pods, when agents may use one; null = no DNS at all. */
  dnsLabels: Record<string, string> | null;
  dnsPort: number;
  allowDests: AllowedDest[];
}

export const DEFAULT_AGENT_LABELS = { 'agent-egress/role': 'agent' };
export const DEFAULT_PROXY_LABELS = { 'app.kubernetes.io/name': 'agent-egress' };

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const DNS_1123 = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** `key=value[,key=value]` as Kubernetes label selectors write them. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of text.split(',')) {
    const eq = pair.indexOf('=');
    if (eq === -1) throw new FirewallOptionError(`label ${JSON.stringify(pair)}: expected key=value`);
    const k = pair.slice(0, eq);
    const v = pair.slice(eq + 1);
    if (!LABEL_KEY.test(k) || !LABEL_VALUE.test(v)) throw new FirewallOptionError(`label ${JSON.stringify(pair)} is not a valid Kubernetes label`);
    out[k] = v;
  }
  return out;
}

export function checkName(kind: string, s: string): string {
  if (!DNS_1123.test(s)) throw new FirewallOptionError(`${kind} ${JSON.stringify(s)} is not a valid Kubernetes name`);
  return s;
}

/** The NetworkPolicy object: agents may reach the proxy pods (and the DNS filter), nothing else. */
export function networkPolicy(o: KubernetesOptions): Record<string, unknown> {
  const egress: Array<Record<string, unknown>> = [
    {
      to: [{ podSelector: { matchLabels: o.proxyLabels } }],
      ports: o.proxyPorts.map((port) => ({ protocol: 'TCP', port })),
    },
  ];
  if (o.dnsLabels) {
    egress.push({
      to: [{ podSelector: { matchLabels: o.dnsLabels } }],
      ports: [
        { protocol: 'UDP', port: o.dnsPort },
        { protocol: 'TCP', port: o.dnsPort },
      ],
    });
  }
  for (const d of o.allowDests) {
    const rule: Record<string, unknown> = { to: [{ ipBlock: { cidr: d.cidr.text } }] };
    if (d.ports.length > 0) rule.ports = d.ports.flatMap((port) => [{ protocol: 'TCP', port }, { protocol: 'UDP', port }]);
    egress.push(rule);
  }
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: o.name, namespace: o.namespace, labels: { 'app.kubernetes.io/part-of': 'agent-egress' } },
    spec: {
      podSelector: { matchLabels: o.agentLabels },
      // Listing Egress makes everything not named below denied for the selected pods (IPv4 and IPv6 alike).
      policyTypes: ['Egress'],
      egress,
    },
  };
}

export function renderKubernetes(o: KubernetesOptions): string {
  return (
    '# agent-egress: agents may reach only the proxy (and the DNS filter when given).\n' +
    '# A NetworkPolicy does not see traffic inside a pod: keep the proxy in its own pods, not as a sidecar of\n' +
    '# the agent (see docs/deploy.md, "Pods: the sidecar case").\n' +
    stringify(networkPolicy(o))
  );
}
