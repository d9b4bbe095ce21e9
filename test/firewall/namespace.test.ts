import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADDR, CLI, HERE, NOBODY, createTopology, nsRun, probe, startInNs, type Topology, RULE_VARIANTS } from './netns.js';

// Each rendering is proven against real kernel rules in its own fresh namespaces.
const VARIANTS = RULE_VARIANTS;

const PROXY_FLAGS = ['--proxy', `${ADDR.gw4}:3128`, '--proxy', `[${ADDR.gw6}]:3128`];

describe.each(VARIANTS)('companion firewall in a network namespace: $name', (variant) => {
  let topo: Topology;
  const children: ChildProcess[] = [];
  let tmp: string;
  const backend = variant.backend;

  const cli = (...args: string[]) => nsRun(topo.agent, ['node', CLI, 'firewall', ...args]);
  /** Everything the agent namespace's rule tool shows, without counters: "changed nothing" means equal. */
  const ruleDump = () => {
    if (!backend) return nsRun(topo.agent, ['nft', 'list', 'ruleset']).stdout.replace(/packets \d+ bytes \d+/g, '');
    return ['iptables', 'ip6tables']
      .map((b) => nsRun(topo.agent, [`${b}-${backend}-save`, '-t', 'filter']).stdout.replace(/^#.*$/gm, '').replace(/\[\d+:\d+\]/g, ''))
      .join('\n');
  };
  const addForeignRule = () => {
    if (!backend) nsRun(topo.agent, ['nft', '-f', '-'], 'table inet someone_else {\n chain c {\n  ip daddr 192.0.2.99 counter accept\n }\n}\n');
    else {
      nsRun(topo.agent, [`iptables-${backend}`, '-A', 'OUTPUT', '-d', '192.0.2.99', '-j', 'ACCEPT']);
      nsRun(topo.agent, [`ip6tables-${backend}`, '-A', 'OUTPUT', '-d', '2001:db8:99::1', '-j', 'ACCEPT']);
    }
  };
  const hasForeignRule = () => (backend ? /192\.0\.2\.99/.test(ruleDump()) && /2001:db8:99::1/.test(ruleDump()) : /someone_else/.test(ruleDump()));
  const directAll = () => ({
    tcp4: probe(topo.agent, 'tcp', ADDR.web4, 80).ok,
    tcp6: probe(topo.agent, 'tcp', ADDR.web6, 80).ok,
    udp4: probe(topo.agent, 'udp', ADDR.dns4, 53).ok,
    udp6: probe(topo.agent, 'udp', ADDR.dns6, 53).ok,
  });
  const allOpen = { tcp4: true, tcp6: true, udp4: true, udp6: true };
  const allClosed = { tcp4: false, tcp6: false, udp4: false, udp6: false };

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'ae-fw-'));
    topo = createTopology();
    children.push(await startInNs(topo.origin, join(HERE, 'origin.mjs')));
    // A listener where the proxy would be, so "the proxy is still reachable" is tested for real.
    children.push(await startInNs(topo.gateway, join(HERE, 'origin.mjs'), ['3128']));
  });

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    topo?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('without rules the agent reaches the origin directly (TCP and UDP, IPv4 and IPv6)', () => {
    expect(directAll()).toEqual(allOpen);
    expect(cli('check', ...variant.tool).code).toBe(1);
  });

  it('applied, blocks direct TCP and UDP (incl. DNS to a public resolver) over IPv4 and IPv6, fast, and keeps the proxy reachable', () => {
    addForeignRule();
    const r = cli('apply', ...variant.tool, ...PROXY_FLAGS);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(directAll()).toEqual(allClosed);
    // REJECT: TCP gets a reset and UDP a port-unreachable, so tools fail at once rather than hang.
    expect(probe(topo.agent, 'tcp', ADDR.web6, 80).error).toBe('ECONNREFUSED');
    expect(probe(topo.agent, 'udp', ADDR.dns4, 53).error).toBe('ECONNREFUSED');
    // Other ports on the proxy host are closed too: only the proxy port is allowed.
    expect(probe(topo.agent, 'tcp', ADDR.gw4, 80).ok).toBe(false);
    expect(probe(topo.agent, 'tcp', ADDR.gw4, 3128).ok).toBe(true);
    expect(probe(topo.agent, 'tcp', ADDR.gw6, 3128).ok).toBe(true);
  });

  it('check --counters reports the rules in place and the refused packets per family', () => {
    const r = cli('check', ...variant.tool, '--json');
    expect(r.code).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.inPlace).toBe(true);
    expect(st.families.map((f: { family: number }) => f.family)).toEqual([4, 6]);
    for (const f of st.families) {
      expect(f.inPlace).toBe(true);
      expect(f.refused.packets).toBeGreaterThan(0);
    }
    const text = cli('check', ...variant.tool, '--counters');
    expect(text.stdout).toMatch(/in place/);
    expect(text.stdout).toMatch(/IPv6: confined, loopback confined, refused [1-9]\d* packets/);
  });

  it('re-applying is idempotent: the same rules, once', () => {
    const before = ruleDump();
    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS).code).toBe(0);
    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS).code).toBe(0);
    expect(ruleDump()).toBe(before);
    if (backend) expect(ruleDump().match(/-A OUTPUT -j AGENT_EGRESS/g)).toHaveLength(2);
    expect(directAll()).toEqual(allClosed);
  });

  it('a broken rule set changes nothing and exits non-zero with the reason', () => {
    const before = ruleDump();
    let r;
    if (!backend) {
      const file = join(tmp, 'broken.nft');
      writeFileSync(file, 'table inet agent_egress\ndelete table inet agent_egress\ntable inet agent_egress {\n chain output {\n  type filter hook output priority filter; policy accept;\n  ip daddr 10.0.0.0/8 accept\n  ip daddr not-an-address drop\n }\n}\n');
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'nftables', file]);
    } else {
      // IPv4 valid (and different), IPv6 broken: neither family may change.
      const v4 = join(tmp, 'ok.v4');
      const v6 = join(tmp, 'broken.v6');
      writeFileSync(v4, '*filter\n:AGENT_EGRESS - [0:0]\n:AGENT_EGRESS_LOG - [0:0]\n-A AGENT_EGRESS -j RETURN\nCOMMIT\n');
      writeFileSync(v6, '*filter\n:AGENT_EGRESS - [0:0]\n:AGENT_EGRESS_LOG - [0:0]\n-A AGENT_EGRESS -p no-such-protocol -j RETURN\nCOMMIT\n');
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'iptables', backend, v4, v6]);
    }
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/failed/);
    expect(ruleDump()).toBe(before);
    expect(directAll()).toEqual(allClosed);
    // Bad options never reach the kernel: exit 2, nothing changed.
    const bad = cli('apply', ...variant.tool, '--proxy', 'proxy.example:3128');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/IP address/);
    expect(ruleDump()).toBe(before);
  });

  it('--agent-uid confines only that user; --proxy-uid exempts only that user', () => {
    const ok = (r: { ok: boolean }) => r.ok;
    const asNobody = (proto: 'tcp' | 'udp', host: string, port: number) => probe(topo.agent, proto, host, port, NOBODY);

    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS, '--agent-uid', '65534').code).toBe(0);
    expect(ok(asNobody('tcp', ADDR.web4, 80))).toBe(false);
    expect(ok(asNobody('tcp', ADDR.web6, 80))).toBe(false);
    expect(ok(asNobody('tcp', ADDR.gw4, 3128))).toBe(true);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(true); // root is not the confined agent

    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS, '--proxy-uid', '65534').code).toBe(0);
    expect(ok(asNobody('tcp', ADDR.web4, 80))).toBe(true);
    expect(ok(asNobody('udp', ADDR.dns6, 53))).toBe(true);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(false);
    expect(probe(topo.agent, 'tcp', ADDR.web6, 80).ok).toBe(false);
  });

  it('--dns-server and --allow-dest open exactly what they name', () => {
    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS, '--dns-server', ADDR.dns4, '--dns-server', `[${ADDR.dns6}]:53`, '--allow-dest', `[${ADDR.web6}/128]:80`).code).toBe(0);
    expect(probe(topo.agent, 'udp', ADDR.dns4, 53).ok).toBe(true);
    expect(probe(topo.agent, 'udp', ADDR.dns6, 53).ok).toBe(true);
    expect(probe(topo.agent, 'tcp', ADDR.web6, 80).ok).toBe(true);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).ok).toBe(false);
    expect(probe(topo.agent, 'tcp', ADDR.denied6, 80).ok).toBe(false);
  });

  it('--action drop drops silently instead of rejecting', () => {
    expect(cli('apply', ...variant.tool, ...PROXY_FLAGS, '--action', 'drop').code).toBe(0);
    expect(probe(topo.agent, 'tcp', ADDR.web4, 80).error).toBe('timeout');
  });

  it('remove restores direct access and leaves other rules untouched', () => {
    expect(cli('remove', ...variant.tool).code).toBe(0);
    expect(directAll()).toEqual(allOpen);
    expect(hasForeignRule()).toBe(true);
    expect(ruleDump()).not.toMatch(/agent_egress|AGENT_EGRESS/);
    expect(cli('check', ...variant.tool).code).toBe(1);
    // Removing twice is harmless.
    expect(cli('remove', ...variant.tool).code).toBe(0);
  });
});
