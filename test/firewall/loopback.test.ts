import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADDR, CLI, HERE, NOBODY, ROOT, asUser, createTopology, nsRun, probe, startInNs, startListener, type Topology, RULE_VARIANTS, CONFINE_MODES } from './netns.js';

// Loopback is confined like everything else (issue 16): in the agent's namespace the real proxy, its
// admin API and its DNS filter run as root, the agent as `nobody`. The agent reaches the proxy's
// listeners, what --allow-dest names and its own --agent-local-port servers; nothing else on 127.0.0.0/8,
// ::1 or the namespace's own addresses.
const VARIANTS = RULE_VARIANTS;

const MODES = CONFINE_MODES;

interface Svc {
  child: ChildProcess;
  port: number;
}

describe.each(VARIANTS)('loopback confinement: $name', (variant) => {
  let topo: Topology;
  const children: ChildProcess[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'ae-lo-'));
  let proxy: { listen: number; admin: number; dns: number };
  // Root's services on loopback and on the namespace's own addresses.
  let db4: Svc, db6: Svc, other4: Svc, other6: Svc, stub: Svc, own4: Svc, own6: Svc;
  // The agent's own servers: two named by --agent-local-port, one not.
  let agentDev4: Svc, agentDev6: Svc, agentUnlisted: Svc;

  const cli = (...args: string[]) => nsRun(topo.agent, ['node', CLI, 'firewall', ...args]);
  const ruleFlags = () => [
    '--proxy', `127.0.0.1:${proxy.listen}`,
    '--dns-server', `127.0.0.1:${proxy.dns}`,
    '--allow-dest', `127.0.0.1/32:${db4.port}`,
    '--allow-dest', `[::1/128]:${db6.port}`,
    '--agent-local-port', `${agentDev4.port},${agentDev6.port}`,
    // A range too, so the kernel loads that form on every apply.
    '--agent-local-port', '1-2',
  ];
  const ok = (proto: 'tcp' | 'udp', host: string, port: number, uid?: number) => probe(topo.agent, proto, host, port, uid).ok;
  const viaProxy = (uid: number) =>
    nsRun(topo.agent, [...asUser(uid), 'curl', '-sS', '--max-time', '8', '-x', `http://127.0.0.1:${proxy.listen}`, `http://${ADDR.web4}/via-proxy`]);
  const dig = (uid: number) => nsRun(topo.agent, [...asUser(uid), 'dig', '@127.0.0.1', '-p', String(proxy.dns), '+tries=1', '+time=3', 'denied.example']);

  /** Connected and answered (or, for UDP, got an answer), whatever the answer was. */
  const reaches = (proto: 'tcp' | 'udp', host: string, port: number, uid?: number) => probe(topo.agent, proto, host, port, uid).error === undefined;
  /** Every destination on this host the agent must not reach, by name, for a readable failure. */
  const forbidden = () => ({
    'other service 127.0.0.1 tcp': ok('tcp', '127.0.0.1', other4.port, NOBODY),
    'other service 127.0.0.1 udp': ok('udp', '127.0.0.1', other4.port, NOBODY),
    'other service ::1 tcp': ok('tcp', '::1', other6.port, NOBODY),
    'other service ::1 udp': ok('udp', '::1', other6.port, NOBODY),
    'stub resolver 127.0.0.53 udp': ok('udp', '127.0.0.53', stub.port, NOBODY),
    'admin API': reaches('tcp', '127.0.0.1', proxy.admin, NOBODY),
    'own address v4': ok('tcp', ADDR.agent4, own4.port, NOBODY),
    'own address v6': ok('tcp', ADDR.agent6, own6.port, NOBODY),
    'agent server on a port not named': ok('tcp', '127.0.0.1', agentUnlisted.port, NOBODY),
    // The database listens on every address; --allow-dest named only 127.0.0.1.
    'allowed db port at the own address (named for 127.0.0.1/32 only)': ok('tcp', ADDR.agent4, db4.port, NOBODY),
  });
  const all = (m: Record<string, boolean>, v: boolean) => Object.fromEntries(Object.keys(m).map((k) => [k, v]));

  beforeAll(async () => {
    topo = createTopology();
    children.push(await startInNs(topo.origin, join(HERE, 'origin.mjs')));
    const p = spawn('ip', ['netns', 'exec', topo.agent, 'node', join(ROOT, 'bin', 'agent-egress.js'), 'serve',
      '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--dns-listen', '127.0.0.1:0',
      '--allow', `${ADDR.web4}:80`, '--allow-address', '198.51.100.0/24', '--no-decision-log', '--data-dir', join(tmp, 'data')],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(p);
    let out = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    for (let i = 0; i < 120 && !out.includes('agent-egress proxy listening'); i++) {
      if (p.exitCode !== null) throw new Error(`proxy exited: ${out}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const line = out.split('\n').find((l) => l.includes('agent-egress proxy listening'));
    if (!line) throw new Error(`proxy did not start: ${out}`);
    const info = JSON.parse(line) as { listen: string; admin: string; dns: string[] };
    const portOf = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1));
    proxy = { listen: portOf(info.listen), admin: portOf(info.admin), dns: portOf(info.dns[0]) };

    const start = async (host: string, uid?: number) => {
      const s = await startListener(topo.agent, host, uid);
      children.push(s.child);
      return s;
    };
    [db4, db6, other4, other6, stub, own4, own6] = await Promise.all([
      start('0.0.0.0'), start('::1'), start('127.0.0.1'), start('::1'), start('127.0.0.53'), start(ADDR.agent4), start(ADDR.agent6),
    ]);
    [agentDev4, agentDev6, agentUnlisted] = await Promise.all([start('127.0.0.1', NOBODY), start('::1', NOBODY), start('127.0.0.1', NOBODY)]);
  });

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    topo?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('without rules the agent reaches every local service (the test can see a refusal)', () => {
    const open = forbidden();
    expect(open).toEqual(all(open, true));
    expect(viaProxy(NOBODY).stdout).toContain('origin-ok GET /via-proxy');
  });

  it.each(MODES)('confines loopback, confining $name', (mode) => {
    const r = cli('apply', ...variant.tool, ...ruleFlags(), ...mode.flags);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);

    // What the agent may reach: the proxy (and through it the origin), its DNS filter, --allow-dest, its own servers.
    const proxied = viaProxy(NOBODY);
    expect(proxied.code, proxied.stderr).toBe(0);
    expect(proxied.stdout).toContain('origin-ok GET /via-proxy');
    const answer = dig(NOBODY);
    expect(answer.code, answer.stdout).toBe(0);
    expect(answer.stdout).toMatch(/status: (NXDOMAIN|REFUSED)/);
    expect(ok('tcp', '127.0.0.1', db4.port, NOBODY)).toBe(true);
    expect(ok('udp', '127.0.0.1', db4.port, NOBODY)).toBe(true);
    expect(ok('tcp', '::1', db6.port, NOBODY)).toBe(true);
    expect(ok('tcp', '127.0.0.1', agentDev4.port, NOBODY)).toBe(true);
    expect(ok('udp', '127.0.0.1', agentDev4.port, NOBODY)).toBe(true);
    expect(ok('tcp', '::1', agentDev6.port, NOBODY)).toBe(true);

    // Everything else on this host is refused (a reset, not a hang) ...
    const denied = forbidden();
    expect(denied).toEqual(all(denied, false));
    expect(probe(topo.agent, 'tcp', '127.0.0.1', proxy.admin, NOBODY).error).toBe('ECONNREFUSED');
    // ... and so is the outside, directly.
    expect(ok('tcp', ADDR.web4, 80, NOBODY)).toBe(false);

    // The proxy's user is not confined: it still reaches the local services and the origin.
    expect(ok('tcp', '127.0.0.1', other4.port)).toBe(true);
    expect(ok('tcp', '::1', other6.port)).toBe(true);
    expect(ok('tcp', ADDR.agent4, own4.port)).toBe(true);

    // check reports loopback confined, and the loopback refusals are counted per family like any other.
    const st = JSON.parse(cli('check', ...variant.tool, '--json').stdout) as {
      inPlace: boolean;
      families: Array<{ family: number; inPlace: boolean; loopbackConfined: boolean; refused: { packets: number } }>;
    };
    expect(st.inPlace).toBe(true);
    expect(st.families.map((f) => f.family)).toEqual([4, 6]);
    for (const f of st.families) {
      expect(f).toMatchObject({ inPlace: true, loopbackConfined: true });
      expect(f.refused.packets).toBeGreaterThan(0);
    }
    expect(cli('check', ...variant.tool).stdout).toMatch(/IPv4: confined, loopback confined\n {2}IPv6: confined, loopback confined/);
  });

  it('check says NOT in place for a rule set that lets all of loopback through (as older versions applied)', () => {
    expect(cli('remove', ...variant.tool).code).toBe(0);
    let r;
    if (!variant.backend) {
      const text = cli('render', '--tool', 'nftables', ...ruleFlags(), '--proxy-uid', '0').stdout;
      const old = text.replace('ct state established,related accept', 'oifname "lo" accept\n\t\tct state established,related accept');
      expect(old).not.toBe(text);
      writeFileSync(join(tmp, 'old.nft'), old);
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'nftables', join(tmp, 'old.nft')]);
    } else {
      for (const f of ['4', '6']) {
        const text = cli('render', '--tool', 'iptables', '--family', f, ...ruleFlags(), '--proxy-uid', '0').stdout;
        const old = text.replace('-A AGENT_EGRESS -m conntrack', '-A AGENT_EGRESS -o lo -j RETURN\n-A AGENT_EGRESS -m conntrack');
        expect(old).not.toBe(text);
        writeFileSync(join(tmp, `old.v${f}`), old);
      }
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'iptables', variant.backend, join(tmp, 'old.v4'), join(tmp, 'old.v6')]);
    }
    expect(r.stderr).toBe('');
    expect(ok('tcp', '127.0.0.1', other4.port, NOBODY)).toBe(true); // the hole check must report
    const c = cli('check', ...variant.tool, '--json');
    expect(c.code).toBe(1);
    const st = JSON.parse(c.stdout) as { inPlace: boolean; families: Array<{ loopbackConfined: boolean }> };
    expect(st.inPlace).toBe(false);
    expect(st.families.map((f) => f.loopbackConfined)).toEqual([false, false]);
    expect(cli('check', ...variant.tool).stdout).toMatch(/IPv4: open, loopback OPEN/);
    // Applying the current rules over them confines loopback again.
    expect(cli('apply', ...variant.tool, ...ruleFlags(), '--proxy-uid', '0').code).toBe(0);
    expect(ok('tcp', '127.0.0.1', other4.port, NOBODY)).toBe(false);
    expect(cli('check', ...variant.tool).code).toBe(0);
  });

  it('remove restores everything on loopback', () => {
    expect(cli('remove', ...variant.tool).code).toBe(0);
    const open = forbidden();
    expect(open).toEqual(all(open, true));
    expect(cli('check', ...variant.tool).code).toBe(1);
  });
});
