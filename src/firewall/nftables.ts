import { cidrArg, type FirewallOptions } from './options.js';

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'agent_egress';
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
  if (o.proxyUids.length > 0) confine.push(`meta skuid { ${o.proxyUids.join(', ')} } accept`);
  for (const p of o.proxies) confine.push(`${p.family === 4 ? 'ip' : 'ip6'} daddr ${p.address} tcp dport ${p.port} accept`);
  for (const d of o.dnsServers) {
    confine.push(`${d.family === 4 ? 'ip' : 'ip6'} daddr ${d.address} meta l4proto { tcp, udp } th dport ${d.port} accept`);
  }
  for (const d of o.allowDests) {
    const match = `${d.cidr.family === 4 ? 'ip' : 'ip6'} daddr ${cidrArg(d.cidr)}`;
    confine.push(d.ports.length === 0 ? `${match} accept` : `${match} meta l4proto { tcp, udp } th dport { ${d.ports.join(', ')} } accept`);
  }
  if (o.agentLocalPorts.length > 0) {
    const ports = o.agentLocalPorts.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(', ');
    confine.push(`oifname "lo" meta l4proto { tcp, udp } th dport { ${ports} } accept`);
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

  const entry = o.agentUids.length === 0 ? 'jump confine' : `meta skuid { ${o.agentUids.join(', ')} } jump confine`;
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
    `${t}${entry}`,
    '\t}',
    '',
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

/** Removal: idempotent for the same reason as the render (create, then delete). */
export function renderNftablesRemoval(): string {
  return `table ${NFT_FAMILY} ${NFT_TABLE}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;
}
