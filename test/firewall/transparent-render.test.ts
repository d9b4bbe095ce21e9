import { describe, expect, it } from 'vitest';
import { firewallCli } from './netns.js';

// What `firewall render --transparent/--dns` prints: NAT redirects of the confined traffic, the filter
// accepting exactly the redirected flows, for both tools and both families. Loaded into a real kernel
// by transparent-namespace.test.ts.
const render = (...args: string[]) => firewallCli('render', ...args);
const ok = (...args: string[]) => {
  const r = render(...args);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
};
/** The lines of one nft chain, trimmed. */
const nftChain = (text: string, name: string) => {
  const m = new RegExp(`\\n\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(text);
  expect(m, `chain ${name} in\n${text}`).not.toBeNull();
  return m![1].split('\n').map((l) => l.trim());
};
/** The lines of one iptables-restore table section. */
const iptTable = (text: string, table: string) => {
  const m = new RegExp(`\\*${table}\\n([\\s\\S]*?)\\nCOMMIT`).exec(text);
  return m ? m[1].split('\n') : null;
};

const SIDECAR = ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--transparent', '[::1]:3130', '--capture-ports', '80,443'];

describe('firewall render --transparent: nftables', () => {
  it('HOST:PORT serves captured port i at PORT+i, per family, and the filter accepts only those redirected flows', () => {
    const out = ok('--tool', 'nftables', ...SIDECAR);
    expect(nftChain(out, 'capture')).toEqual(['type nat hook output priority -100; policy accept;', 'jump transparent']);
    expect(nftChain(out, 'transparent')).toEqual([
      'meta skuid { 0 } return',
      'meta nfproto ipv4 tcp dport 80 dnat ip to 127.0.0.1:3130',
      'meta nfproto ipv4 tcp dport 443 dnat ip to 127.0.0.1:3131',
      'meta nfproto ipv6 tcp dport 80 dnat ip6 to [::1]:3130',
      'meta nfproto ipv6 tcp dport 443 dnat ip6 to [::1]:3131',
    ]);
    const confine = nftChain(out, 'confine');
    expect(confine.filter((l) => l.includes('ct status dnat'))).toEqual([
      'ip daddr 127.0.0.1 tcp dport 3130 ct status dnat ct original proto-dst 80 accept',
      'ip daddr 127.0.0.1 tcp dport 3131 ct status dnat ct original proto-dst 443 accept',
      'ip6 daddr ::1 tcp dport 3130 ct status dnat ct original proto-dst 80 accept',
      'ip6 daddr ::1 tcp dport 3131 ct status dnat ct original proto-dst 443 accept',
    ]);
    // The listener port is opened for redirected flows only, never as such; everything else still ends in refuse.
    expect(confine.some((l) => /dport 313[01] accept$/.test(l))).toBe(false);
    expect(confine[confine.length - 1]).toBe('jump refuse');
  });

  it('the order of --capture-ports numbers the listener ports; without it, 80 then 443', () => {
    const rules = nftChain(ok('--tool', 'nftables', '--proxy-uid', '0', '--transparent', '127.0.0.1:4000', '--capture-ports', '443,22,80'), 'transparent');
    expect(rules.filter((l) => l.includes('dnat'))).toEqual([
      'meta nfproto ipv4 tcp dport 22 dnat ip to 127.0.0.1:4001',
      'meta nfproto ipv4 tcp dport 80 dnat ip to 127.0.0.1:4002',
      'meta nfproto ipv4 tcp dport 443 dnat ip to 127.0.0.1:4000',
    ]);
    const dflt = nftChain(ok('--tool', 'nftables', '--proxy-uid', '0', '--transparent', '127.0.0.1:4000'), 'transparent');
    expect(dflt.filter((l) => l.includes('dnat'))).toEqual(['meta nfproto ipv4 tcp dport 80 dnat ip to 127.0.0.1:4000', 'meta nfproto ipv4 tcp dport 443 dnat ip to 127.0.0.1:4001']);
  });

  it('PORT=HOST:PORT maps one captured port; a gateway listener is DNATed to its address, no --proxy needed', () => {
    const out = ok('--tool', 'nftables', '--transparent', '443=10.231.1.1:3131', '--transparent', '80=[fd31:1::1]:3130', '--transparent', '8443=10.231.1.1:4443');
    expect(nftChain(out, 'transparent')).toEqual([
      'meta nfproto ipv4 tcp dport 443 dnat ip to 10.231.1.1:3131',
      'meta nfproto ipv4 tcp dport 8443 dnat ip to 10.231.1.1:4443',
      'meta nfproto ipv6 tcp dport 80 dnat ip6 to [fd31:1::1]:3130',
    ]);
    expect(nftChain(out, 'confine')).toContain('ip6 daddr fd31:1::1 tcp dport 3130 ct status dnat ct original proto-dst 80 accept');
  });

  it('--dns sends UDP and TCP 53 to the resolver; --agent-uid redirects only that user', () => {
    const out = ok('--tool', 'nftables', '--agent-uid', '1000', '--proxy', '127.0.0.1:3128', '--dns', '127.0.0.1:5353', '--dns', '[::1]');
    expect(nftChain(out, 'capture')).toContain('meta skuid { 1000 } jump transparent');
    expect(nftChain(out, 'transparent')).toEqual([
      'ip daddr 127.0.0.1 tcp dport 3128 return',
      'meta nfproto ipv4 tcp dport 53 dnat ip to 127.0.0.1:5353',
      'meta nfproto ipv4 udp dport 53 dnat ip to 127.0.0.1:5353',
      'meta nfproto ipv6 tcp dport 53 dnat ip6 to [::1]:53',
      'meta nfproto ipv6 udp dport 53 dnat ip6 to [::1]:53',
    ]);
    expect(nftChain(out, 'confine')).toContain('ip daddr 127.0.0.1 udp dport 5353 ct status dnat ct original proto-dst 53 accept');
  });

  it('what the agent may reach directly is never redirected: proxy listeners, --dns-server, --allow-dest, its own servers', () => {
    const rules = nftChain(
      ok('--tool', 'nftables', ...SIDECAR, '--proxy', '10.0.0.5:443', '--dns-server', '10.0.0.53', '--allow-dest', '10.9.0.0/16:443', '--agent-local-port', '80'),
      'transparent',
    );
    const dnat = rules.findIndex((l) => l.includes('dnat'));
    expect(rules.slice(0, dnat)).toEqual([
      'meta skuid { 0 } return',
      'ip daddr 10.0.0.5 tcp dport 443 return',
      'ip daddr 10.0.0.53 meta l4proto { tcp, udp } th dport 53 return',
      'ip daddr 10.9.0.0/16 meta l4proto { tcp, udp } th dport { 443 } return',
      'oifname "lo" meta l4proto { tcp, udp } th dport { 80 } return',
    ]);
  });

  it('without --transparent or --dns there is no nat chain at all', () => {
    const out = ok('--tool', 'nftables', '--proxy', '127.0.0.1:3128');
    expect(out).not.toMatch(/nat|dnat|chain capture|chain transparent/);
  });
});

describe('firewall render --transparent: iptables', () => {
  it('IPv4: a nat chain jumped to from nat OUTPUT, DNAT per captured port, the filter letting the DNAT flows through', () => {
    const out = ok('--tool', 'iptables', '--family', '4', ...SIDECAR);
    expect(iptTable(out, 'nat')).toEqual([
      ':AGENT_EGRESS_NAT - [0:0]',
      '-A AGENT_EGRESS_NAT -m owner --uid-owner 0 -j RETURN',
      '-A AGENT_EGRESS_NAT -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:3130',
      '-A AGENT_EGRESS_NAT -p tcp -m tcp --dport 443 -j DNAT --to-destination 127.0.0.1:3131',
      '-I OUTPUT 1 -j AGENT_EGRESS_NAT',
    ]);
    const filter = iptTable(out, 'filter')!;
    expect(filter.filter((l) => l.includes('DNAT'))).toEqual([
      '-A AGENT_EGRESS -d 127.0.0.1 -p tcp -m tcp --dport 3130 -m conntrack --ctstate DNAT --ctorigdstport 80 -j RETURN',
      '-A AGENT_EGRESS -d 127.0.0.1 -p tcp -m tcp --dport 3131 -m conntrack --ctstate DNAT --ctorigdstport 443 -j RETURN',
    ]);
    expect(filter.some((l) => /--dport 313[01] -j RETURN/.test(l))).toBe(false);
  });

  it('IPv6 gets its own family\'s targets only; --dns adds UDP and TCP 53; --agent-uid jumps only for that user', () => {
    const out = ok('--tool', 'iptables', '--family', '6', '--agent-uid', '1000', '--transparent', '[::1]:3130', '--capture-ports', '443', '--transparent', '80=127.0.0.1:3140', '--dns', '[::1]:5353');
    expect(iptTable(out, 'nat')).toEqual([
      ':AGENT_EGRESS_NAT - [0:0]',
      '-A AGENT_EGRESS_NAT -p tcp -m tcp --dport 53 -j DNAT --to-destination [::1]:5353',
      '-A AGENT_EGRESS_NAT -p tcp -m tcp --dport 443 -j DNAT --to-destination [::1]:3130',
      '-A AGENT_EGRESS_NAT -p udp -m udp --dport 53 -j DNAT --to-destination [::1]:5353',
      '-I OUTPUT 1 -m owner --uid-owner 1000 -j AGENT_EGRESS_NAT',
    ]);
    expect(iptTable(out, 'filter')).toContain('-A AGENT_EGRESS -d ::1 -p udp -m udp --dport 5353 -m conntrack --ctstate DNAT --ctorigdstport 53 -j RETURN');
    expect(out).not.toContain('127.0.0.1');
    // A family with nothing to redirect has no nat section.
    expect(iptTable(ok('--tool', 'iptables', '--family', '4', '--agent-uid', '1000', '--transparent', '[::1]:3130'), 'nat')).toBeNull();
  });

  it('without --transparent or --dns there is no nat section', () => {
    expect(ok('--tool', 'iptables', '--proxy', '127.0.0.1:3128')).not.toMatch(/\*nat|DNAT/);
  });
});

describe('firewall --transparent/--capture-ports/--dns: bad input is one line and exit 2', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['port 0 captured', ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--capture-ports', '0'], /--capture-ports: bad port "0"/],
    ['port above 65535', ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--capture-ports', '80,65536'], /bad port "65536"/],
    ['a captured port twice', ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--capture-ports', '80,443,80'], /port 80 is listed twice/],
    ['PORT+i above 65535', ['--proxy-uid', '0', '--transparent', '127.0.0.1:65535', '--capture-ports', '80,443'], /443 would be served at 65536/],
    ['two base addresses of one family', ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--transparent', '127.0.0.2:3130'], /second HOST:PORT for IPv4/],
    ['explicit port also in the base list', ['--proxy-uid', '0', '--transparent', '127.0.0.1:3130', '--transparent', '443=127.0.0.1:4443'], /tcp port 443 is redirected twice/],
    ['explicit port twice', ['--transparent', '443=10.0.0.1:3131', '--transparent', '443=10.0.0.1:3132'], /redirected twice/],
    ['two ports to one listener', ['--transparent', '443=10.0.0.1:3131', '--transparent', '80=10.0.0.1:3131'], /share a target/],
    ['captured 53 and --dns', ['--transparent', '53=10.0.0.1:3131', '--dns', '10.0.0.1:5353'], /tcp port 53 is redirected twice/],
    ['explicit bad port', ['--transparent', '0=10.0.0.1:3131'], /--transparent 0=10\.0\.0\.1:3131: bad port "0"/],
    ['a name, not an address', ['--transparent', 'proxy.example:3130'], /--transparent .*IP address/],
    ['no port on the listener', ['--transparent', '443=10.0.0.1'], /--transparent 443=10\.0\.0\.1/],
    ['--capture-ports without a base address', ['--transparent', '443=10.0.0.1:3131', '--capture-ports', '80'], /--capture-ports needs a --transparent HOST:PORT/],
    ['the target is the HTTP proxy listener', ['--proxy', '10.0.0.1:3128', '--transparent', '443=10.0.0.1:3128'], /also a --proxy listener/],
  ];
  it.each(cases)('%s', (_name, args, message) => {
    for (const tool of ['nftables', 'iptables']) {
      const r = render('--tool', tool, ...args);
      expect(r.code, r.stdout).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });

  it('a loopback listener without --proxy-uid/--agent-uid is rendered, with one warning line: the proxy would be redirected to itself', () => {
    for (const [args, named] of [
      [['--transparent', '127.0.0.1:3130'], /tcp\/80 -> 127\.0\.0\.1:3130, tcp\/443 -> 127\.0\.0\.1:3131/],
      [['--proxy', '10.0.0.1:3128', '--dns', '[::1]:5353'], /udp\/53 -> \[::1\]:5353/],
    ] as const) {
      for (const tool of ['nftables', 'iptables']) {
        const r = render('--tool', tool, ...args);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/dnat/i);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stderr).toMatch(/^agent-egress firewall: warning: .*--proxy-uid .*redirected to itself/);
        expect(r.stderr).toMatch(named);
      }
    }
    // Naming the proxy's user, or confining only the agent, silences it; a listener elsewhere never warns.
    for (const extra of [['--proxy-uid', '0'], ['--agent-uid', '1000']]) expect(render('--transparent', '127.0.0.1:3130', ...extra).stderr).toBe('');
    expect(render('--transparent', '10.0.0.1:3130').stderr).toBe('');
  });

  it('kubernetes and docker cannot redirect: the flags are refused there, pointing at the namespace rules', () => {
    for (const tool of ['kubernetes', 'docker']) {
      const r = render('--tool', tool, '--transparent', '443=10.0.0.1:3131');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/nftables\/iptables rules/);
    }
  });

  it('neither --proxy nor --transparent is still refused', () => {
    const r = render('--tool', 'nftables', '--proxy-uid', '0');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--proxy ADDR:PORT or --transparent HOST:PORT is required/);
  });
});
