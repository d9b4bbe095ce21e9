import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ADDR, CLI, HERE, createTopology, nsRun, probe, startInNs, startServe, type Topology } from './netns.js';

// The end-to-end proof: agent namespace confined by the companion rules, the real proxy in the
// gateway namespace, an origin namespace standing in for the internet.
const PROXY = `http://${ADDR.gw4}:3128`;

describe.each([
  { name: 'nftables', tool: ['--tool', 'nftables'] },
  { name: 'iptables', tool: ['--tool', 'iptables'] },
])('end to end through the real proxy with $name rules', (variant) => {
  let topo: Topology;
  const children: ChildProcess[] = [];
  let proxyOutput = () => '';
  const logDir = mkdtempSync(join(tmpdir(), 'ae-e2e-'));
  const logFile = join(logDir, 'decisions.jsonl');

  const curl = (env: Record<string, string>, ...args: string[]) =>
    nsRun(topo.agent, ['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'curl', '-sS', '-i', '--max-time', '8', ...args]);

  beforeAll(async () => {
    topo = createTopology();
    children.push(await startInNs(topo.origin, join(HERE, 'origin.mjs')));
    const proxy = await startServe(topo.gateway, ['--listen', `${ADDR.gw4}:3128`, '--allow', `${ADDR.web4}:80`, '--allow-address', '198.51.100.0/24',
      '--log-file', logFile, '--data-dir', join(logDir, 'data'), '--admin-listen', '127.0.0.1:0']);
    children.push(proxy.child);
    proxyOutput = proxy.output;
    const r = nsRun(topo.agent, ['node', CLI, 'firewall', 'apply', ...variant.tool, '--proxy', `${ADDR.gw4}:3128`]);
    if (r.code !== 0) throw new Error(`apply failed: ${r.stderr}`);
  });

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    topo?.destroy();
    rmSync(logDir, { recursive: true, force: true });
  });

  it('1. direct TCP and UDP (incl. DNS to a public-looking resolver) fail over IPv4 and IPv6', () => {
    for (const [proto, host, port] of [['tcp', ADDR.web4, 80], ['tcp', ADDR.web6, 80], ['udp', ADDR.dns4, 53], ['udp', ADDR.dns6, 53]] as const) {
      expect(probe(topo.agent, proto, host, port).ok, `${proto} ${host}`).toBe(false);
    }
    const direct = curl({}, `http://${ADDR.web4}/`);
    expect(direct.code).not.toBe(0);
    const dig = nsRun(topo.agent, ['dig', `@${ADDR.dns4}`, '+tries=1', '+time=2', 'example.com']);
    expect(dig.code).not.toBe(0);
  });

  it('2. the same request through the proxy (HTTP_PROXY and a CONNECT tunnel) succeeds', () => {
    const plain = curl({ http_proxy: PROXY }, `http://${ADDR.web4}/hello`);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(plain.stdout).toContain('origin-ok GET /hello');
    const tunnel = curl({ HTTPS_PROXY: PROXY, http_proxy: PROXY }, '--proxytunnel', `http://${ADDR.web4}/tunnel`);
    expect(tunnel.stdout).toContain('origin-ok GET /tunnel');
  });

  it('3. a denied origin through the proxy gets 403 and a decision record', async () => {
    const r = curl({ http_proxy: PROXY }, `http://${ADDR.denied4}/`);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403/);
    const id = /x-agent-egress-decision: *(\S+)/i.exec(r.stdout)?.[1];
    expect(id).toBeTruthy();
    // The record is written while the proxy runs: poll the log (bounded) and parse the line.
    let rec: Record<string, unknown> | undefined;
    for (let i = 0; i < 100 && !rec; i++) {
      const lines = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : [];
      rec = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((x) => x.id === id);
      if (!rec) await new Promise((r) => setTimeout(r, 50));
    }
    expect(rec, proxyOutput().slice(-2000)).toMatchObject({ verdict: 'deny', host: ADDR.denied4, status: 403, reason: 'no_rule' });
  });

  it('4. the counters show the dropped direct attempts', () => {
    const r = nsRun(topo.agent, ['node', CLI, 'firewall', 'check', ...variant.tool, '--json']);
    expect(r.code).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.families[0].refused.packets).toBeGreaterThan(0);
    expect(st.families[1].refused.packets).toBeGreaterThan(0);
  });

  it('4b. a proxy on the same host exports those counters in /metrics (--firewall-metrics)', async () => {
    const local = await startServe(topo.agent, ['--listen', '127.0.0.1:0', '--no-decision-log', '--data-dir', join(logDir, 'data-local'),
      '--admin-listen', '127.0.0.1:0', '--firewall-metrics', variant.name]);
    children.push(local.child);
    const admin = local.listening.admin as string;
    // Loopback is confined too: the namespace's own users reach the admin port only once a rule names it.
    // Re-applying resets the counters, so refuse one more packet before reading them.
    expect(probe(topo.agent, 'tcp', '127.0.0.1', Number(admin.split(':')[1])).error).toBe('ECONNREFUSED');
    const allow = nsRun(topo.agent, ['node', CLI, 'firewall', 'apply', ...variant.tool, '--proxy', `${ADDR.gw4}:3128`, '--allow-dest', `${admin.replace(':', '/32:')}`]);
    expect(allow.code, allow.stderr).toBe(0);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(false);
    const m = nsRun(topo.agent, ['curl', '-sS', '--max-time', '5', `http://${admin}/metrics`]);
    expect(m.code).toBe(0);
    expect(m.stdout).toMatch(new RegExp(`agent_egress_firewall_in_place\\{tool="${variant.name}",family="ipv4"\\} 1`));
    const packets = Number(new RegExp(`agent_egress_firewall_refused_packets\\{tool="${variant.name}",family="ipv4"\\} (\\d+)`).exec(m.stdout)?.[1]);
    expect(packets).toBeGreaterThan(0);
    local.child.kill('SIGTERM');
  });

  it('5. a broken rule set changes nothing; removing the rules restores direct access', () => {
    const bad = nsRun(topo.agent, ['node', CLI, 'firewall', 'apply', ...variant.tool, '--proxy', `${ADDR.gw4}:99999`]);
    expect(bad.code).toBe(2);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(false);
    expect(nsRun(topo.agent, ['node', CLI, 'firewall', 'remove', ...variant.tool]).code).toBe(0);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(true);
    expect(probe(topo.agent, 'udp', ADDR.dns6, 53).ok).toBe(true);
  });
});
