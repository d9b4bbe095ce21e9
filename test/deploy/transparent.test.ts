import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { parseTransparentListen } from '../../src/capture/mapping.js';
import { parseFirewallOptions } from '../../src/firewall/options.js';

// deploy/kubernetes/transparent-sidecar.yaml: the init-container pattern of transparent capture.
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/transparent-sidecar.yaml'), 'utf8')).map((d) => d.toJS());

interface Container {
  name: string;
  args?: string[];
  securityContext: { runAsUser: number; runAsNonRoot?: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[]; add?: string[] } };
}

const [deployment] = docs;
const pod = deployment.spec.template.spec as { initContainers: Container[]; containers: Container[]; hostNetwork?: boolean };
const init = pod.initContainers[0];
const egress = pod.containers.find((c) => c.name === 'egress')!;
const agent = pod.containers.find((c) => c.name === 'agent')!;
/** `--flag=value` values of one flag, in order. */
const values = (c: Container, flag: string) => (c.args ?? []).filter((a) => a.startsWith(`${flag}=`)).map((a) => a.slice(flag.length + 1));

describe('Kubernetes transparent capture: init container + proxy sidecar', () => {
  it('is one Deployment, valid against the Kubernetes OpenAPI schema', () => {
    expect(docs).toHaveLength(1);
    expect(() => new Deployment(deployment).validate()).not.toThrow();
    const broken = structuredClone(deployment);
    broken.spec.template.spec.initContainers[0].securityContext.capabilities.add = 'NET_ADMIN';
    expect(() => new Deployment(broken).validate()).toThrow();
  });

  it('the init container applies the rules with NET_ADMIN and nothing else, before the agent starts', () => {
    expect(pod.hostNetwork).not.toBe(true);
    expect(init.args!.slice(0, 2)).toEqual(['firewall', 'apply']);
    expect(init.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
    expect(init.securityContext.allowPrivilegeEscalation).toBe(false);
    // Init containers all finish before any container starts: the agent never runs without the rules.
    expect(pod.containers.map((c) => c.name)).toContain('agent');
  });

  it('the image it runs has nft (the final stage installs nftables)', () => {
    const df = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(df.slice(df.lastIndexOf('\nFROM '))).toMatch(/apt-get install [^\n]*\bnftables\b/);
    expect(init.args).toContain('--tool=nftables');
  });

  it('its flags are what `firewall render` accepts (the same parser as apply)', () => {
    const r = execFileSync('node', [join(ROOT, 'test/firewall/cli.mjs'), 'firewall', 'render', ...init.args!.slice(2)], { encoding: 'utf8', timeout: 20_000 });
    expect(r).toContain('dnat ip to 127.0.0.1:3131');
  });

  it('the rules exempt exactly the proxy sidecar\'s uid, and the agent runs as another uid without capabilities', () => {
    expect(values(init, '--proxy-uid')).toEqual([String(egress.securityContext.runAsUser)]);
    expect(agent.securityContext.runAsUser).not.toBe(egress.securityContext.runAsUser);
    expect(agent.securityContext.runAsUser).not.toBe(0);
    expect(agent.securityContext.runAsNonRoot).toBe(true);
    expect(agent.securityContext.capabilities).toEqual({ drop: ['ALL'] });
    expect(agent.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(egress.securityContext.capabilities).toEqual({ drop: ['ALL'] });
  });

  it('the firewall redirects to the listeners the sidecar serves: same base address, same captured ports, same resolver, same proxy listener', () => {
    expect(values(init, '--transparent')).toEqual(values(egress, '--transparent-listen'));
    expect(values(init, '--capture-ports')).toEqual(values(egress, '--capture-ports'));
    expect(values(init, '--dns')).toEqual(values(egress, '--dns-listen'));
    // Read by the two real parsers, the sidecar's listeners and the firewall's redirects pair up exactly.
    const listeners = parseTransparentListen(values(egress, '--transparent-listen'), values(egress, '--capture-ports')[0]);
    const fw = parseFirewallOptions({
      proxyUid: values(init, '--proxy-uid'),
      proxy: values(init, '--proxy'),
      transparent: values(init, '--transparent'),
      capturePorts: values(init, '--capture-ports'),
      dns: values(init, '--dns'),
    });
    const captures = fw.redirects.filter((r) => r.kind === 'capture').map((r) => ({ capturedPort: r.port, host: r.to.address, port: r.to.port }));
    expect(captures.sort((x, y) => x.capturedPort - y.capturedPort)).toEqual(listeners.sort((x, y) => x.capturedPort - y.capturedPort));
    expect(captures).toHaveLength(2);
    // Tools that do use HTTPS_PROXY reach the sidecar's ordinary listener too.
    expect(values(init, '--proxy')).toEqual(values(egress, '--listen'));
    // No admin API in the agent's pod: the agent shares its loopback.
    expect(egress.args).toContain('--no-admin');
  });
});
