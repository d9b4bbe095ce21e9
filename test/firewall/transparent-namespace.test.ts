import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADDR, CLI, HERE, NOBODY, createTopology, nsRun, probe, readableScript, startInNs, startListener, startReady, type Topology, RULE_VARIANTS, CONFINE_MODES } from './netns.js';

// `firewall apply --transparent/--dns` against real kernel rules: in the agent's namespace, stand-ins for
// the transparent listener and the filtering resolver (root, like a sidecar proxy) say on which port they
// were reached; the agent (`nobody`) connects to the origin's addresses as if no proxy existed.
const VARIANTS = RULE_VARIANTS;

const MODES = CONFINE_MODES;
/** Each case runs a few dozen short processes in the namespaces: generous on a loaded machine. */
const SLOW = 120_000;

describe.each(VARIANTS)('transparent capture rules in a network namespace: $name', (variant) => {
  let topo: Topology;
  const children: ChildProcess[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'ae-tp-'));
  // First ports of the stand-ins: captured 80 at +0 and 443 at +1, DNS at +0.
  let cap4: number, cap6: number, dns4: number, dns6: number;
  let other4: number, other6: number;

  const cli = (...args: string[]) => nsRun(topo.agent, ['node', CLI, 'firewall', ...args]);
  const ruleFlags = () => [
    '--transparent', `127.0.0.1:${cap4}`, '--transparent', `[::1]:${cap6}`, '--capture-ports', '80,443',
    '--dns', `127.0.0.1:${dns4}`, '--dns', `[::1]:${dns6}`,
  ];
  const ruleDump = () => {
    if (!variant.backend) return nsRun(topo.agent, ['nft', 'list', 'ruleset']).stdout.replace(/packets \d+ bytes \d+/g, '');
    return ['iptables', 'ip6tables']
      .flatMap((b) => ['filter', 'nat'].map((t) => nsRun(topo.agent, [`${b}-${variant.backend}-save`, '-t', t]).stdout))
      .map((s) => s.replace(/^#.*$/gm, '').replace(/\[\d+:\d+\]/g, ''))
      .join('\n');
  };
  /** What answered: the stand-in's "captured ..." line, the origin's answer, or the error. */
  const reached = (proto: 'tcp' | 'udp', host: string, port: number, uid?: number) => {
    const r = probe(topo.agent, proto, host, port, uid);
    return r.error ?? r.body?.trim().split('\n').pop() ?? '';
  };
  const status = () =>
    JSON.parse(cli('check', ...variant.tool, '--json').stdout) as {
      inPlace: boolean;
      families: Array<{ family: number; inPlace: boolean; redirects: Array<{ protocol: string; port: number; to: string }> }>;
    };

  beforeAll(async () => {
    topo = createTopology();
    children.push(await startInNs(topo.origin, join(HERE, 'origin.mjs')));
    const start = async (ns: string, host: string, count: number) => {
      const { child, said } = await startReady(ns, readableScript('capture-target.mjs'), [host, String(count)]);
      children.push(child);
      return Number(said);
    };
    [cap4, cap6, dns4, dns6] = await Promise.all([start(topo.agent, '127.0.0.1', 2), start(topo.agent, '::1', 2), start(topo.agent, '127.0.0.1', 1), start(topo.agent, '::1', 1)]);
    const o4 = await startListener(topo.origin, ADDR.web4);
    const o6 = await startListener(topo.origin, ADDR.web6);
    children.push(o4.child, o6.child);
    [other4, other6] = [o4.port, o6.port];
  });

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    topo?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('without rules the agent reaches the origin on every port, and the stand-ins directly', () => {
    expect(reached('tcp', ADDR.web4, 80, NOBODY)).toBe('origin-ok GET /');
    expect(reached('tcp', ADDR.web6, 80, NOBODY)).toBe('origin-ok GET /');
    expect(reached('tcp', ADDR.web4, other4, NOBODY)).toBe('origin-ok GET /');
    expect(reached('udp', ADDR.dns4, 53, NOBODY)).toBe('echo:ping');
    expect(reached('tcp', '127.0.0.1', cap4, NOBODY)).toMatch(/^captured /);
    expect(status().families.map((f) => f.redirects)).toEqual([[], []]);
  }, SLOW);

  it.each(MODES)('redirects the captured ports and DNS to the listeners, per family, confining $name', (mode) => {
    const r = cli('apply', ...variant.tool, ...ruleFlags(), ...mode.flags);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);

    // Captured port i arrives at listener port +i: the listener knows the original port without conntrack.
    expect(reached('tcp', ADDR.web4, 80, NOBODY)).toBe(`captured 127.0.0.1:${cap4} from ${ADDR.agent4}`);
    expect(reached('tcp', ADDR.web4, 443, NOBODY)).toBe(`captured 127.0.0.1:${cap4 + 1} from ${ADDR.agent4}`);
    expect(reached('tcp', ADDR.web6, 80, NOBODY)).toBe(`captured ::1:${cap6} from ${ADDR.agent6}`);
    expect(reached('tcp', ADDR.web6, 443, NOBODY)).toBe(`captured ::1:${cap6 + 1} from ${ADDR.agent6}`);
    // Whatever address the agent chose: the proxy decides by name, so the address is not a way around it.
    expect(reached('tcp', ADDR.denied4, 443, NOBODY)).toBe(`captured 127.0.0.1:${cap4 + 1} from ${ADDR.agent4}`);
    expect(reached('tcp', '127.0.0.1', 80, NOBODY)).toBe(`captured 127.0.0.1:${cap4} from 127.0.0.1`);
    // DNS to any resolver, UDP and TCP, lands at the filtering resolver.
    expect(reached('udp', ADDR.dns4, 53, NOBODY)).toBe(`captured:${dns4}`);
    expect(reached('udp', ADDR.dns6, 53, NOBODY)).toBe(`captured:${dns6}`);
    expect(reached('tcp', ADDR.dns4, 53, NOBODY)).toBe(`captured 127.0.0.1:${dns4} from ${ADDR.agent4}`);

    // Everything else stays refused: other ports, UDP elsewhere, and the listener ports themselves when
    // not reached through a redirect.
    expect(reached('tcp', ADDR.web4, other4, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('tcp', ADDR.web6, other6, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('udp', ADDR.dns4, 5353, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('tcp', '127.0.0.1', cap4, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('tcp', '127.0.0.1', cap4 + 1, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('tcp', '::1', cap6, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('udp', '127.0.0.1', dns4, NOBODY)).toBe('ECONNREFUSED');

    // The proxy's user (root here) is never redirected: its connections reach the origin itself.
    expect(reached('tcp', ADDR.web4, 80)).toBe('origin-ok GET /');
    expect(reached('tcp', ADDR.web6, 80)).toBe('origin-ok GET /');
    expect(reached('udp', ADDR.dns4, 53)).toBe('echo:ping');

    const st = status();
    expect(st.inPlace).toBe(true);
    expect(st.families.map((f) => f.redirects)).toEqual([
      [
        { protocol: 'tcp', port: 53, to: `127.0.0.1:${dns4}` },
        { protocol: 'tcp', port: 80, to: `127.0.0.1:${cap4}` },
        { protocol: 'tcp', port: 443, to: `127.0.0.1:${cap4 + 1}` },
        { protocol: 'udp', port: 53, to: `127.0.0.1:${dns4}` },
      ],
      [
        { protocol: 'tcp', port: 53, to: `[::1]:${dns6}` },
        { protocol: 'tcp', port: 80, to: `[::1]:${cap6}` },
        { protocol: 'tcp', port: 443, to: `[::1]:${cap6 + 1}` },
        { protocol: 'udp', port: 53, to: `[::1]:${dns6}` },
      ],
    ]);
    expect(cli('check', ...variant.tool).stdout).toContain(`IPv6: confined, loopback confined, redirects tcp/53 -> [::1]:${dns6}, tcp/80 -> [::1]:${cap6}`);
  }, SLOW);

  it('re-applying is idempotent: the same rules, once', () => {
    const before = ruleDump();
    expect(cli('apply', ...variant.tool, ...ruleFlags(), '--agent-uid', String(NOBODY)).code).toBe(0);
    expect(cli('apply', ...variant.tool, ...ruleFlags(), '--agent-uid', String(NOBODY)).code).toBe(0);
    expect(ruleDump()).toBe(before);
    if (variant.backend) expect(ruleDump().match(/-A OUTPUT -m owner --uid-owner 65534 -j AGENT_EGRESS_NAT/g)).toHaveLength(2);
  }, SLOW);

  it('a rule set that fails to load changes nothing, nat table included', () => {
    const before = ruleDump();
    let r;
    if (!variant.backend) {
      const text = cli('render', '--tool', 'nftables', ...ruleFlags(), '--proxy-uid', '0').stdout;
      const broken = text.replace('dnat ip to 127.0.0.1', 'dnat ip to 127.0.0.300');
      expect(broken).not.toBe(text);
      writeFileSync(join(tmp, 'broken.nft'), broken);
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'nftables', join(tmp, 'broken.nft')]);
    } else {
      // IPv4 valid and different (other listener ports), IPv6 broken: neither family may change.
      const v4 = cli('render', '--tool', 'iptables', '--family', '4', '--transparent', '127.0.0.1:40000', '--proxy-uid', '0').stdout;
      const v6 = cli('render', '--tool', 'iptables', '--family', '6', ...ruleFlags(), '--proxy-uid', '0').stdout.replace('-p tcp -m tcp --dport 80 -j DNAT', '-p tcp -m tcp --dport 80 -j NO_SUCH_TARGET');
      writeFileSync(join(tmp, 'ok.v4'), v4);
      writeFileSync(join(tmp, 'broken.v6'), v6);
      r = nsRun(topo.agent, ['node', join(HERE, 'apply-text.mjs'), 'iptables', variant.backend, join(tmp, 'ok.v4'), join(tmp, 'broken.v6')]);
    }
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/failed/);
    expect(ruleDump()).toBe(before);
    expect(reached('tcp', ADDR.web4, 443, NOBODY)).toBe(`captured 127.0.0.1:${cap4 + 1} from ${ADDR.agent4}`);
  }, SLOW);

  it('re-applying without --transparent takes the redirects out and closes the captured ports', () => {
    expect(cli('apply', ...variant.tool, '--proxy', `127.0.0.1:${cap4}`, '--proxy-uid', '0').code).toBe(0);
    expect(reached('tcp', ADDR.web4, 80, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('tcp', ADDR.web6, 443, NOBODY)).toBe('ECONNREFUSED');
    expect(reached('udp', ADDR.dns4, 53, NOBODY)).toBe('ECONNREFUSED');
    expect(ruleDump()).not.toMatch(/AGENT_EGRESS_NAT|chain capture|dnat/i);
    const st = status();
    expect(st.inPlace).toBe(true);
    expect(st.families.map((f) => f.redirects)).toEqual([[], []]);
  }, SLOW);

  it('remove takes out the nat rules with the rest and restores direct access', () => {
    expect(cli('apply', ...variant.tool, ...ruleFlags(), '--proxy-uid', '0').code).toBe(0);
    expect(reached('tcp', ADDR.web4, 80, NOBODY)).toMatch(/^captured /);
    expect(cli('remove', ...variant.tool).code).toBe(0);
    expect(ruleDump()).not.toMatch(/agent_egress|AGENT_EGRESS/);
    expect(reached('tcp', ADDR.web4, 80, NOBODY)).toBe('origin-ok GET /');
    expect(reached('tcp', ADDR.web6, 443, NOBODY)).toBe('ECONNREFUSED'); // nothing listens there: not redirected
    expect(reached('udp', ADDR.dns6, 53, NOBODY)).toBe('echo:ping');
    const c = cli('check', ...variant.tool, '--json');
    expect(c.code).toBe(1);
    expect((JSON.parse(c.stdout) as { families: Array<{ redirects: unknown[] }> }).families.map((f) => f.redirects)).toEqual([[], []]);
  }, SLOW);
});
