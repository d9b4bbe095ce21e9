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
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
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

describe('docker-compose.fleet.yml (two proxies sharing one PostgreSQL store)', () => {
  const base = parse(read('docker-compose.yml'));
  const fleet = parse(read('docker-compose.fleet.yml'));
  const validate = composeValidator();
  // Compose's merge of an override, as far as these files use it: mappings merged key by key,
  // lists (networks, command) appended.
  const merge = (a: unknown, b: unknown): unknown => {
    if (Array.isArray(a) && Array.isArray(b)) return [...new Set([...a, ...b])];
    if (a && b && typeof a === 'object' && typeof b === 'object') {
      const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
      for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = k in out ? merge(out[k], v) : v;
      return out;
    }
    return b;
  };
  const merged = merge(base, fleet) as typeof base;

  it('is valid against the compose-spec schema, alone and merged over docker-compose.yml', () => {
    expect(validate(fleet), JSON.stringify(validate.errors)).toBe(true);
    expect(validate(merged), JSON.stringify(validate.errors)).toBe(true);
    expect(Object.keys(merged.services).sort()).toEqual(['agent', 'egress', 'egress-2', 'postgres']);
  });

  it('PostgreSQL sits on an internal network only the proxies join; the agent cannot reach it', () => {
    expect(merged.networks.store.internal).toBe(true);
    expect(merged.services.postgres.networks).toEqual(['store']);
    expect(merged.services.postgres.ports).toBeUndefined();
    expect([...merged.services.egress.networks].sort()).toEqual(['agents', 'outside', 'store']);
    expect(Object.keys(merged.services['egress-2'].networks).sort()).toEqual(['agents', 'outside', 'store']);
    expect(merged.services.agent.networks).toEqual(['agents']);
  });

  it('both proxies use the store with the password from the environment, never in the file, each with its own replica name and spool', () => {
    const proxies = ['egress', 'egress-2'].map((n) => merged.services[n]);
    for (const p of proxies) {
      const env = p.environment as Record<string, string>;
      expect(env.AGENT_EGRESS_STORE).toMatch(/^postgres:\/\/agent_egress@postgres:5432\/agent_egress$/);
      // No password in the URL's userinfo: the password is only ever interpolated from the environment.
      expect(new URL(env.AGENT_EGRESS_STORE).password).toBe('');
      expect(env.PGPASSWORD).toBe('${AGENT_EGRESS_PG_PASSWORD:?set AGENT_EGRESS_PG_PASSWORD}');
      expect(p.depends_on.postgres.condition).toBe('service_healthy');
    }
    expect(merged.services.postgres.environment.POSTGRES_PASSWORD).toBe('${AGENT_EGRESS_PG_PASSWORD:?set AGENT_EGRESS_PG_PASSWORD}');
    expect(new Set(proxies.map((p) => p.environment.AGENT_EGRESS_REPLICA_NAME)).size).toBe(2);
    const spool = (p: { volumes: { target: string; source: string }[] }) => p.volumes.find((v) => v.target === '/var/lib/agent-egress')!.source;
    expect(spool(proxies[0])).not.toBe(spool(proxies[1]));
  });

  it('the second proxy answers to the agent as "egress" too, hardened like the first', () => {
    const e2 = merged.services['egress-2'];
    expect(e2.networks.agents.aliases).toEqual(['egress']);
    const e1 = merged.services.egress;
    for (const k of ['read_only', 'user', 'cap_drop', 'security_opt', 'tmpfs', 'healthcheck']) expect(e2[k], k).toEqual(e1[k]);
    expect(e2.command).toEqual(e1.command);
    expect(e2.ports).toEqual(['127.0.0.1:3130:3129']);
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
  const [pdb] = docs('pdb.yaml');
  const [hpa] = docs('hpa.yaml');

  it('are valid against the Kubernetes OpenAPI schemas', () => {
    expect(() => new Deployment(deployment).validate()).not.toThrow();
    expect(() => new Service(service).validate()).not.toThrow();
    expect(() => new ConfigMap(configMap).validate()).not.toThrow();
    expect(() => new Namespace(namespace).validate()).not.toThrow();
    expect(() => new NetworkPolicy(netpol).validate()).not.toThrow();
    expect(() => new PodDisruptionBudget(pdb).validate()).not.toThrow();
    expect(() => new HorizontalPodAutoscaler(hpa).validate()).not.toThrow();
  });

  it('the schema check can fail', () => {
    const broken = structuredClone(deployment);
    broken.spec.replicas = 'two';
    expect(() => new Deployment(broken).validate()).toThrow();
    expect(() => new HorizontalPodAutoscaler({ ...hpa, spec: { ...hpa.spec, minReplicas: 'two' } }).validate()).toThrow();
    expect(() => new PodDisruptionBudget({ ...pdb, spec: { ...pdb.spec, minAvailable: { pods: 1 } } }).validate()).toThrow();
  });

  const container = () => deployment.spec.template.spec.containers[0];
  const envOf = (name: string) => container().env.find((e: { name: string }) => e.name === name);

  it('Deployment: the store URL and its password come from a Secret, never a literal; the replica name from the pod name', () => {
    expect(envOf('AGENT_EGRESS_STORE').valueFrom.secretKeyRef).toEqual({ name: 'agent-egress-store', key: 'url' });
    expect(envOf('PGPASSWORD').valueFrom.secretKeyRef).toEqual({ name: 'agent-egress-store', key: 'password' });
    expect(envOf('AGENT_EGRESS_REPLICA_NAME').valueFrom.fieldRef).toEqual({ fieldPath: 'metadata.name' });
    // No literal value anywhere names a database or carries a password, and no argument does either.
    const c = container();
    for (const e of c.env) expect(e.value, e.name).toBeUndefined();
    expect(c.args.join(' ')).not.toMatch(/postgres|password|--store/i);
    // The spool directory is a writable volume of its own.
    const spool = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/var/lib/agent-egress');
    expect(c.args).toContain('--data-dir=/var/lib/agent-egress');
    expect(deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === spool.name).emptyDir).toBeDefined();
  });

  it('Deployment: the policy is the ConfigMap, mounted whole (a subPath mount would never see an update), so edits reload', () => {
    const c = container();
    const mount = c.volumeMounts.find((m: { name: string }) => m.name === 'policy');
    expect(mount.subPath).toBeUndefined();
    const vol = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === 'policy');
    expect(vol.configMap.name).toBe(configMap.metadata.name);
    expect(c.args).toContain(`--policy=${mount.mountPath}/${Object.keys(configMap.data)[0]}`);
    expect(c.args.some((a: string) => a.startsWith('--policy-poll=0'))).toBe(false);
  });

  it('Deployment: requests a CPU share the HPA can measure, and gives SIGTERM time to drain and flush', () => {
    const c = container();
    expect(c.resources.requests.cpu).toBe('500m');
    expect(c.resources.requests.memory).toBeDefined();
    expect(c.resources.limits.cpu).toBeDefined();
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(20);
    expect(c.lifecycle.preStop.exec.command).toEqual(['sleep', '5']);
    expect(c.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
  });

  it('PodDisruptionBudget keeps a replica through drains, and a drain can still proceed', () => {
    expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    expect(pdb.metadata.namespace).toBe(deployment.metadata.namespace);
    expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(1);
    expect(pdb.spec.minAvailable).toBeLessThan(hpa.spec.minReplicas);
  });

  it('HorizontalPodAutoscaler (autoscaling/v2) scales the Deployment on CPU, from 2 replicas up', () => {
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.metadata.namespace).toBe(deployment.metadata.namespace);
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.minReplicas).toBeLessThanOrEqual(deployment.spec.replicas);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    expect(hpa.spec.metrics).toEqual([{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }]);
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
