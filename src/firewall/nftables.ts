import { cidrArg, type FirewallOptions } from './options.js';

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'agent_egress';
/** The nat base chain of transparent capture; the redirects live in the regular chain NFT_NAT_CHAIN. */
export const NFT_NAT_HOOK = 'capture';
export const NFT_NAT_CHAIN = 'transparent';
/** Named counters, one per family, of every packet the rules refused. */
export const NFT_COUNTERS = { 4: 'refused_ipv4', 6: 'refused_ipv6' } as const;

/**
 * One `nft -f` transaction holding the whole table. The leading create-then-delete makes the file
 * replace any earlier version of the table atomically, whether or not one exists: re-applying is idempotent.
 */
export function renderNftables(o: FirewallOptions): string {
  const t = '\t\t';
  const confine: string[] = [];
  // No blanket loopback accept: what leaves through lo (127.0.0.0/8, ::1 and this host's own addresses)
  // reaches stub resolvers, the admin API and local databases, so it is confined like everything else.
  confine.push('ct state established,related accept');
  // Neighbour discovery: without it IPv6 cannot even find the proxy on the link. 255 = link-local only.
  confine.push('icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept');
  confine.push(...directMatches(o).map((m) => `${m} accept`));
  // After the NAT chain the filter sees the listener as destination: accept exactly the redirected flows
  // (ct status dnat, from the captured port), so connecting to the listener port directly stays refused.
  for (const r of o.redirects) {
    confine.push(`${ipKw(r.to.family)} daddr ${r.to.address} ${r.protocol} dport ${r.to.port} ct status dnat ct original proto-dst ${r.port} accept`);
  }
  confine.push('jump refuse');

  const refuse = [
    `meta nfproto ipv4 counter name "${NFT_COUNTERS[4]}"`,
    `meta nfproto ipv6 counter name "${NFT_COUNTERS[6]}"`,
    `limit rate ${o.logPerMinute}/minute burst 5 packets log prefix "${o.logPrefix}"`,
  ];
  if (o.action === 'drop') refuse.push('drop');
  else {
    // A reset makes TCP clients fail at once instead of hanging until their own timeout.
    refuse.push('meta l4proto tcp reject with tcp reset');
    refuse.push('reject');
  }

  const entry = (chain: string) => (o.agentUids.length === 0 ? `jump ${chain}` : `meta skuid { ${o.agentUids.join(', ')} } jump ${chain}`);
  return [
    '#!/usr/sbin/nft -f',
    '# agent-egress companion firewall: one table, IPv4 and IPv6. Load with `nft -f FILE`.',
    `table ${NFT_FAMILY} ${NFT_TABLE}`,
    `delete table ${NFT_FAMILY} ${NFT_TABLE}`,
    `table ${NFT_FAMILY} ${NFT_TABLE} {`,
    `\tcounter ${NFT_COUNTERS[4]} {`,
    '\t}',
    `\tcounter ${NFT_COUNTERS[6]} {`,
    '\t}',
    '',
    '\tchain output {',
    `${t}type filter hook output priority filter; policy accept;`,
    `${t}${entry('confine')}`,
    '\t}',
    '',
    ...natChains(o, entry(NFT_NAT_CHAIN)),
    '\tchain confine {',
    ...confine.map((l) => t + l),
    '\t}',
    '',
    '\tchain refuse {',
    ...refuse.map((l) => t + l),
    '\t}',
    '}',
    '',
  ].join('\n');
}

const ipKw = (f: 4 | 6) => (f === 4 ? 'ip' : 'ip6');

/**
 * What the agent may reach as it is, as match expressions: the filter accepts these, and the NAT chain
 * leaves them alone (the proxy's own user, an explicit proxy listener on 443, an --allow-dest, the agent's
 * own servers are never redirected to the transparent listener).
 */
function directMatches(o: FirewallOptions): string[] {
  const m: string[] = [];
  if (o.proxyUids.length > 0) m.push(`meta skuid { ${o.proxyUids.join(', ')} }`);
  for (const p of o.proxies) m.push(`${ipKw(p.family)} daddr ${p.address} tcp dport ${p.port}`);
  for (const d of o.dnsServers) m.push(`${ipKw(d.family)} daddr ${d.address} meta l4proto { tcp, udp } th dport ${d.port}`);
  for (const d of o.allowDests) {
    const match = `${ipKw(d.cidr.family)} daddr ${cidrArg(d.cidr)}`;
    m.push(d.ports.length === 0 ? match : `${match} meta l4proto { tcp, udp } th dport { ${d.ports.join(', ')} }`);
  }
  if (o.agentLocalPorts.length > 0) {
    const ports = o.agentLocalPorts.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(', ');
    m.push(`oifname "lo" meta l4proto { tcp, udp } th dport { ${ports} }`);
  }
  return m;
}

/**
 * The NAT side of transparent capture, only when something is redirected: a nat hook at dstnat priority
 * (before the filter) that sends the confined users' new connections to the captured ports to their listener.
 */
function natChains(o: FirewallOptions, entry: string): string[] {
  if (o.redirects.length === 0) return [];
  const t = '\t\t';
  const rules = [
    ...directMatches(o).map((m) => `${m} return`),
    ...o.redirects.map((r) => {
      const to = r.to.family === 4 ? `${r.to.address}:${r.to.port}` : `[${r.to.address}]:${r.to.port}`;
      return `meta nfproto ipv${r.to.family} ${r.protocol} dport ${r.port} dnat ${ipKw(r.to.family)} to ${to}`;
    }),
  ];
  return [
    `\tchain ${NFT_NAT_HOOK} {`,
    // -100 is dstnat: nft 1.0 takes the name only for prerouting, the number everywhere.
    `${t}type nat hook output priority -100; policy accept;`,
    `${t}${entry}`,
    '\t}',
    '',
    `\tchain ${NFT_NAT_CHAIN} {`,
    ...rules.map((l) => t + l),
    '\t}',
    '',
  ];
}

/** Removal: idempotent for the same reason as the render (create, then delete). */
export function renderNftablesRemoval(): string {
  return `table ${NFT_FAMILY} ${NFT_TABLE}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;
}
