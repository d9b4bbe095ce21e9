import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import Ajv2019 from 'ajv/dist/2019.js';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { parsePolicyText } from '../../src/policy/index.js';
import { networkPolicy, DEFAULT_AGENT_LABELS, DEFAULT_PROXY_LABELS } from '../../src/firewall/kubernetes.js';
import { parseAllowedDest } from '../../src/firewall/options.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
const K8S = 'deploy/kubernetes';

function composeValidator() {
  const { $schema, ...schema } = JSON.parse(read('deploy/schemas/compose-spec.json'), (k, v) =>
    // Draft-04 style `id` names (strings); a property called "id" would be an object and stays.
    k === 'id' && typeof v === 'string' ? undefined : v,
  );
  // It declares draft 2019-09 with a trailing '#' Ajv does not know by that spelling; the 2019 build
  // below is that draft. Unknown formats are not checked (strict off).
  expect($schema).toMatch(/2019-09/);
  const ajv = new (Ajv2019 as unknown as typeof Ajv2019.default)({ strict: false, allErrors: true });
  return ajv.compile(schema);
}

describe('docker-compose.yml (gateway pattern)', () => {
  const compose = parse(read('docker-compose.yml'));
  const validate = composeValidator();

  it('is valid against the compose-spec schema', () => {
    expect(validate(compose), JSON.stringify(validate.errors)).toBe(true);
  });

  it('the schema really rejects a broken file (so the check above can fail)', () => {
    expect(validate({ services: { egress: { networks: 'agents', bogus_key: 1 } } })).toBe(false);
  });

  it('puts the agent only on an internal network, with the proxy environment set', () => {
    expect(compose.networks.agents.internal).toBe(true);
    expect(compose.networks.outside?.internal).not.toBe(true);
    const agent = compose.services.agent;
    expect(agent.networks).toEqual(['agents']);
    expect(agent.network_mode).toBeUndefined();
    expect(agent.ports).toBeUndefined();
    for (const k of ['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy']) expect(agent.environment[k]).toBe('http://egress:3128');
    expect(agent.environment.NO_PROXY).toBeDefined();
  });

  it('runs the proxy on both networks, non-root, read-only, with the admin port on host loopback only', () => {
    const egress = compose.services.egress;
    expect([...egress.networks].sort()).toEqual(['agents', 'outside']);
    expect(egress.network_mode).toBeUndefined();
    expect(egress.privileged).not.toBe(true);
    expect(egress.user).toBe('node');
    expect(egress.read_only).toBe(true);
    expect(egress.cap_drop).toEqual(['ALL']);
    expect(egress.ports).toEqual(['127.0.0.1:3129:3129']);
    const policy = egress.volumes.find((v: { target: string }) => v.target === '/etc/agent-egress/policy.yaml');
    expect(policy.read_only).toBe(true);
    expect(egress.volumes.some((v: { type: string; target: string }) => v.type === 'volume' && v.target === '/var/lib/agent-egress')).toBe(true);
    expect(egress.healthcheck.test.join(' ')).toMatch(/3129\/(healthz|readyz)/);
    // Nothing anywhere shares the host's network or publishes the proxy beyond loopback.
    for (const s of Object.values(compose.services) as Array<{ network_mode?: string; ports?: string[] }>) {
      expect(s.network_mode).not.toBe('host');
      for (const p of s.ports ?? []) expect(p.startsWith('127.0.0.1:')).toBe(true);
    }
  });
});

describe('Dockerfile', () => {
  const df = read('Dockerfile');
  const final = df.slice(df.lastIndexOf('\nFROM '));
  it('runs the final stage from node:20-slim as USER node under dumb-init, with a healthcheck and prod deps only', () => {
    expect(final).toMatch(/^\nFROM node:20-slim\s*$/m);
    expect(final).toMatch(/^USER node$/m);
    expect(final).toMatch(/ENTRYPOINT \["dumb-init", "--"/);
    expect(final).toMatch(/^HEALTHCHECK /m);
    expect(df).toMatch(/npm ci --omit=dev/);
    // The runtime stage copies node_modules only from the production-deps stage.
    expect(final).toMatch(/COPY --from=deps .*node_modules/);
    expect(final).not.toMatch(/COPY --from=build .*node_modules/);
  });
  it('keeps secrets and local state out of the build context', () => {
    const ignore = read('.dockerignore').split('\n');
    for (const p of ['certs', 'data', 'node_modules', '.git', '.env']) expect(ignore).toContain(p);
  });
});

describe('Kubernetes manifests', () => {
  const docs = (file: string) => parseAllDocuments(read(join(K8S, file))).map((d) => d.toJS());
  const [deployment] = docs('deployment.yaml');
  const [service] = docs('service.yaml');
  const [configMap] = docs('configmap.yaml');
  const [namespace] = docs('namespace.yaml');
  const [netpol] = docs('networkpolicy.yaml');

  it('are valid against the Kubernetes OpenAPI schemas', () => {
    expect(() => new Deployment(deployment).validate()).not.toThrow();
    expect(() => new Service(service).validate()).not.toThrow();
    expect(() => new ConfigMap(configMap).validate()).not.toThrow();
    expect(() => new Namespace(namespace).validate()).not.toThrow();
    expect(() => new NetworkPolicy(netpol).validate()).not.toThrow();
  });

  it('the schema check can fail', () => {
    const broken = structuredClone(deployment);
    broken.spec.replicas = 'two';
    expect(() => new Deployment(broken).validate()).toThrow();
  });

  it('Deployment: 2+ replicas, probes on the admin port, resources, non-root, read-only root, no host namespaces', () => {
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
    const pod = deployment.spec.template.spec;
    expect(pod.hostNetwork).not.toBe(true);
    expect(pod.hostPID).not.toBe(true);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.automountServiceAccountToken).toBe(false);
    const [c] = pod.containers;
    const adminPort = c.ports.find((p: { name: string }) => p.name === 'admin');
    expect(adminPort.containerPort).toBe(3129);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(c.resources.requests.cpu).toBeDefined();
    expect(c.resources.limits.memory).toBeDefined();
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    const policyMount = c.volumeMounts.find((m: { name: string }) => m.name === 'policy');
    expect(policyMount.readOnly).toBe(true);
    expect(deployment.spec.selector.matchLabels).toEqual(DEFAULT_PROXY_LABELS);
  });

  it('Service exposes only the proxy port, selecting the proxy pods', () => {
    expect(service.spec.selector).toEqual(deployment.spec.template.metadata.labels);
    expect(service.spec.ports.map((p: { port: number }) => p.port)).toEqual([3128]);
    expect(service.spec.type).toBe('ClusterIP');
  });

  it('ConfigMap holds a policy the policy loader accepts', () => {
    expect(() => parsePolicyText(configMap.data['policy.yaml'], 'configmap policy.yaml')).not.toThrow();
  });

  it('NetworkPolicy: selects the agents, Egress only to the proxy pods on the proxy port; it is what `firewall render` makes', () => {
    expect(netpol.spec.podSelector.matchLabels).toEqual(DEFAULT_AGENT_LABELS);
    expect(netpol.spec.policyTypes).toEqual(['Egress']);
    expect(netpol.spec.egress).toEqual([
      { to: [{ podSelector: { matchLabels: deployment.spec.template.metadata.labels } }], ports: [{ protocol: 'TCP', port: 3128 }] },
    ]);
    expect(netpol.metadata.namespace).toBe(deployment.metadata.namespace);
    const rendered = execFileSync('node', [join(ROOT, 'test/firewall/cli.mjs'), 'firewall', 'render', '--format', 'kubernetes'], { encoding: 'utf8', timeout: 20_000 });
    expect(parse(rendered)).toEqual(netpol);
  });

  it('rendered NetworkPolicies with DNS filter and extra destinations stay schema-valid and allow only what is named', () => {
    const np = networkPolicy({
      name: 'agents',
      namespace: 'team-a',
      agentLabels: { app: 'coder' },
      proxyLabels: DEFAULT_PROXY_LABELS,
      proxyPorts: [3128],
      dnsLabels: { 'app.kubernetes.io/name': 'agent-egress-dns' },
      dnsPort: 53,
      allowDests: [parseAllowedDest('10.0.5.7:11434'), parseAllowedDest('fd00:5::/64')],
    });
    expect(() => new NetworkPolicy(np as never).validate()).not.toThrow();
    const egress = (np.spec as { egress: Array<{ to: unknown[]; ports?: unknown[] }> }).egress;
    expect(egress).toHaveLength(4);
    expect(egress[1].ports).toEqual([{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }]);
    expect(egress[2]).toEqual({ to: [{ ipBlock: { cidr: '10.0.5.7/32' } }], ports: [{ protocol: 'TCP', port: 11434 }, { protocol: 'UDP', port: 11434 }] });
    expect(egress[3]).toEqual({ to: [{ ipBlock: { cidr: 'fd00:5::/64' } }] });
  });
});

describe('firewall render --format docker', () => {
  it('produces a compose snippet that is schema-valid and keeps the agent network internal', () => {
    const out = execFileSync('node', [join(ROOT, 'test/firewall/cli.mjs'), 'firewall', 'render', '--format', 'docker', '--internal-network', 'sandbox'], { encoding: 'utf8', timeout: 20_000 });
    const snippet = parse(out);
    const validate = composeValidator();
    expect(validate(snippet), JSON.stringify(validate.errors)).toBe(true);
    expect(snippet.networks.sandbox.internal).toBe(true);
    expect(snippet.services.agent.networks).toEqual(['sandbox']);
    expect(out).toMatch(/docker network create --internal sandbox/);
  });
});
