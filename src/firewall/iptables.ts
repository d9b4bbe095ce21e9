import type { IpFamily } from '../net/ip.js';
import { cidrArg, type FirewallOptions } from './options.js';

/** Our chains: everything we own lives here, so removal never touches anyone else's rules. */
export const CHAIN = 'AGENT_EGRESS';
export const LOG_CHAIN = 'AGENT_EGRESS_LOG';
/** Our chain in the nat table (transparent capture), jumped to from nat OUTPUT. */
export const NAT_CHAIN = 'AGENT_EGRESS_NAT';

// Neighbour discovery: without it IPv6 cannot even find the proxy on the link. 255 = link-local only.
const ND_TYPES = [133, 135, 136];

/** Comma lists for `-m multiport --dports`, which takes at most 15 ports a rule (a range `a:b` counts two). */
function multiportChunks(items: string[]): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  let weight = 0;
  for (const it of items) {
    const w = it.includes(':') ? 2 : 1;
    if (weight + w > 15) {
      out.push(cur.join(','));
      cur = [];
      weight = 0;
    }
    cur.push(it);
    weight += w;
  }
  if (cur.length > 0) out.push(cur.join(','));
  return out;
}

/**
 * What the agent may reach as it is, as rule specs without a target: the filter lets these through, and
 * the NAT chain leaves them alone (the proxy's own user, an explicit proxy listener on 443, an
 * --allow-dest, the agent's own servers are never redirected to the transparent listener).
 */
function directSpecs(o: FirewallOptions, family: IpFamily): string[] {
  const r: string[] = [];
  for (const uid of o.proxyUids) r.push(`-m owner --uid-owner ${uid}`);
  for (const p of o.proxies) {
    if (p.family === family) r.push(`-d ${p.address} -p tcp -m tcp --dport ${p.port}`);
  }
  for (const d of o.dnsServers) {
    if (d.family !== family) continue;
    for (const proto of ['udp', 'tcp']) r.push(`-d ${d.address} -p ${proto} -m ${proto} --dport ${d.port}`);
  }
  for (const d of o.allowDests) {
    if (d.cidr.family !== family) continue;
    if (d.ports.length === 0) {
      r.push(`-d ${cidrArg(d.cidr)}`);
      continue;
    }
    for (const ports of multiportChunks(d.ports.map(String))) {
      for (const proto of ['tcp', 'udp']) r.push(`-d ${cidrArg(d.cidr)} -p ${proto} -m multiport --dports ${ports}`);
    }
  }
  for (const chunk of multiportChunks(o.agentLocalPorts.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}:${p.to}`)))) {
    for (const proto of ['tcp', 'udp']) r.push(`-o lo -p ${proto} -m multiport --dports ${chunk}`);
  }
  return r;
}

const familyRedirects = (o: FirewallOptions, family: IpFamily) => o.redirects.filter((r) => r.to.family === family);

/** The rules of our two chains (no table header, no jumps) for one family. */
export function iptablesChainRules(o: FirewallOptions, family: IpFamily): string[] {
  const a = (rest: string) => `-A ${CHAIN} ${rest}`;
  const r: string[] = [];
  // No blanket loopback RETURN: what leaves through lo (127.0.0.0/8, ::1, this host's own addresses)
  // reaches stub resolvers, the admin API and local databases, so it is confined like everything else.
  r.push(a('-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN'));
  if (family === 6) {
    for (const t of ND_TYPES) r.push(a(`-p ipv6-icmp -m icmp6 --icmpv6-type ${t} -m hl --hl-eq 255 -j RETURN`));
  }
  for (const spec of directSpecs(o, family)) r.push(a(`${spec} -j RETURN`));
  // After the NAT chain the filter sees the listener as destination: let through exactly the redirected
  // flows (DNAT state, from the captured port), so connecting to the listener port directly stays refused.
  for (const x of familyRedirects(o, family)) {
    r.push(a(`-d ${x.to.address} -p ${x.protocol} -m ${x.protocol} --dport ${x.to.port} -m conntrack --ctstate DNAT --ctorigdstport ${x.port} -j RETURN`));
  }
  r.push(a(`-j ${LOG_CHAIN}`));
  const l = (rest: string) => `-A ${LOG_CHAIN} ${rest}`;
  r.push(l(`-m limit --limit ${o.logPerMinute}/min --limit-burst 5 -j LOG --log-prefix "${o.logPrefix}"`));
  if (o.action === 'drop') {
    r.push(l('-j DROP'));
  } else {
    // A reset makes TCP clients fail at once instead of hanging until their own timeout.
    r.push(l('-p tcp -j REJECT --reject-with tcp-reset'));
    r.push(l(`-j REJECT --reject-with ${family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'}`));
  }
  return r;
}

/** The OUTPUT jumps into our chain: all traffic, or only the confined users' traffic. */
export function iptablesJumps(o: FirewallOptions, chain = CHAIN): string[] {
  if (o.agentUids.length === 0) return [`-I OUTPUT 1 -j ${chain}`];
  return o.agentUids.map((uid) => `-I OUTPUT 1 -m owner --uid-owner ${uid} -j ${chain}`);
}

/** `[::1]:3131` for IPv6, as DNAT --to-destination and iptables-save write it. */
function hostPort(address: string, port: number, family: IpFamily): string {
  return family === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The nat chain's rules for one family: leave what is reachable as it is alone, redirect the captured ports. */
export function iptablesNatRules(o: FirewallOptions, family: IpFamily): string[] {
  const a = (rest: string) => `-A ${NAT_CHAIN} ${rest}`;
  return [
    ...directSpecs(o, family).map((spec) => a(`${spec} -j RETURN`)),
    ...familyRedirects(o, family).map((x) => a(`-p ${x.protocol} -m ${x.protocol} --dport ${x.port} -j DNAT --to-destination ${hostPort(x.to.address, x.to.port, family)}`)),
  ];
}

/** The previous state of our nat chain that a new render replaces (nothing, when rendering for print). */
export interface PreviousNat {
  chain: boolean;
  jumps: string[];
}

/**
 * The `*nat` part of a transaction: our chain and jumps when this family redirects anything, else the
 * removal of an earlier set's chain (re-applying without --transparent takes capture out), else nothing,
 * so a rule set without capture never needs the nat table.
 */
function natSection(o: FirewallOptions, family: IpFamily, prev: PreviousNat): string[] {
  const wanted = familyRedirects(o, family).length > 0;
  if (!wanted) return prev.chain || prev.jumps.length > 0 ? natRemoval(prev) : [];
  return ['*nat', `:${NAT_CHAIN} - [0:0]`, ...prev.jumps.map((j) => `-D OUTPUT ${j}`), ...iptablesNatRules(o, family), ...iptablesJumps(o, NAT_CHAIN), 'COMMIT'];
}

function natRemoval(prev: PreviousNat): string[] {
  return ['*nat', ...prev.jumps.map((j) => `-D OUTPUT ${j}`), ...(prev.chain ? [`-F ${NAT_CHAIN}`, `-X ${NAT_CHAIN}`] : []), 'COMMIT'];
}

/**
 * One iptables-restore transaction (use with --noflush). Declaring our chains flushes them, so the
 * new rules replace the old in the same commit; `removeJumps` are the existing OUTPUT jumps to drop
 * first (exact specs from iptables-save), which makes re-applying idempotent.
 */
export function renderIptables(o: FirewallOptions, family: IpFamily, removeJumps: string[] = [], prevNat: PreviousNat = { chain: false, jumps: [] }): string {
  const lines = [
    `# agent-egress companion firewall (IPv${family}); load with ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush`,
    '*filter',
    `:${CHAIN} - [0:0]`,
    `:${LOG_CHAIN} - [0:0]`,
    ...removeJumps.map((spec) => `-D OUTPUT ${spec}`),
    ...iptablesChainRules(o, family),
    ...iptablesJumps(o),
    'COMMIT',
    ...natSection(o, family, prevNat),
  ];
  return lines.join('\n') + '\n';
}

/** Transaction that takes everything of ours out and leaves every other rule as it was. */
export function renderIptablesRemoval(removeJumps: string[], chainsPresent: { main: boolean; log: boolean }, prevNat: PreviousNat = { chain: false, jumps: [] }): string {
  const lines = ['*filter', ...removeJumps.map((spec) => `-D OUTPUT ${spec}`)];
  // Flush both before deleting either: the main chain references the log chain.
  if (chainsPresent.main) lines.push(`-F ${CHAIN}`);
  if (chainsPresent.log) lines.push(`-F ${LOG_CHAIN}`);
  if (chainsPresent.main) lines.push(`-X ${CHAIN}`);
  if (chainsPresent.log) lines.push(`-X ${LOG_CHAIN}`);
  lines.push('COMMIT');
  if (prevNat.chain || prevNat.jumps.length > 0) lines.push(...natRemoval(prevNat));
  return lines.join('\n') + '\n';
}

export interface IptablesState {
  mainChain: boolean;
  logChain: boolean;
  /** Rule specs (after `-A OUTPUT `) of the OUTPUT rules that jump to our chain. */
  jumps: string[];
  /** Whether our chain ends in the jump to the refusing chain (i.e. it closes, not just allows). */
  closes: boolean;
  /** Our chain lets everything through lo (rules from before loopback was confined). */
  loopbackOpen: boolean;
  /** Packets and bytes refused by the final REJECT/DROP rules since the rules were loaded. */
  refused: { packets: number; bytes: number };
  /** Our chains' rule lines as saved, for restoring the previous state after a failed apply. */
  savedRules: string[];
}

const COUNTED = /^\[(\d+):(\d+)\]\s+(.*)$/;

/** Read our part of `iptables-save -c -t filter` output. */
export function parseIptablesSave(text: string): IptablesState {
  const st: IptablesState = { mainChain: false, logChain: false, jumps: [], closes: false, loopbackOpen: false, refused: { packets: 0, bytes: 0 }, savedRules: [] };
  let inFilter = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inFilter = line === '*filter';
    if (!inFilter) continue;
    if (line === `:${CHAIN} - [0:0]` || line.startsWith(`:${CHAIN} `)) st.mainChain = true;
    if (line.startsWith(`:${LOG_CHAIN} `)) st.logChain = true;
    const m = COUNTED.exec(line);
    const rule = m ? m[3] : line;
    if (!rule.startsWith('-A ')) continue;
    if (rule.startsWith('-A OUTPUT ') && rule.endsWith(`-j ${CHAIN}`)) st.jumps.push(rule.slice('-A OUTPUT '.length));
    if (rule.startsWith(`-A ${CHAIN} `)) {
      st.savedRules.push(rule);
      st.closes = rule === `-A ${CHAIN} -j ${LOG_CHAIN}`;
      if (rule === `-A ${CHAIN} -o lo -j RETURN`) st.loopbackOpen = true;
    }
    if (rule.startsWith(`-A ${LOG_CHAIN} `)) {
      st.savedRules.push(rule);
      if (m && /-j (REJECT|DROP)\b/.test(rule)) {
        st.refused.packets += Number(m[1]);
        st.refused.bytes += Number(m[2]);
      }
    }
  }
  return st;
}

/** A redirect as the saved nat rules show it, for `check`. */
export interface SavedRedirect {
  protocol: 'tcp' | 'udp';
  port: number;
  /** `ADDR:PORT`, `[V6]:PORT` for IPv6. */
  to: string;
}

export interface IptablesNatState extends PreviousNat {
  /** Our nat chain's rule lines as saved, for restoring the previous state after a failed apply. */
  savedRules: string[];
  redirects: SavedRedirect[];
}

const SAVED_DNAT = /-p (tcp|udp) -m (?:tcp|udp) --dport (\d+) -j DNAT --to-destination (\S+)$/;

/** Read our part of `iptables-save -t nat` output. */
export function parseIptablesNatSave(text: string): IptablesNatState {
  const st: IptablesNatState = { chain: false, jumps: [], savedRules: [], redirects: [] };
  let inNat = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inNat = line === '*nat';
    if (!inNat) continue;
    if (line.startsWith(`:${NAT_CHAIN} `)) st.chain = true;
    const rule = COUNTED.exec(line)?.[3] ?? line;
    if (rule.startsWith('-A OUTPUT ') && rule.endsWith(`-j ${NAT_CHAIN}`)) st.jumps.push(rule.slice('-A OUTPUT '.length));
    if (!rule.startsWith(`-A ${NAT_CHAIN} `)) continue;
    st.savedRules.push(rule);
    const m = SAVED_DNAT.exec(rule);
    if (m) st.redirects.push({ protocol: m[1] as 'tcp' | 'udp', port: Number(m[2]), to: m[3] });
  }
  return st;
}

/** The `*nat` part that puts a previous nat state back over the current one. */
export function restoreNatSection(prev: IptablesNatState, current: PreviousNat): string[] {
  if (!prev.chain) return current.chain || current.jumps.length > 0 ? natRemoval(current) : [];
  return ['*nat', `:${NAT_CHAIN} - [0:0]`, ...current.jumps.map((j) => `-D OUTPUT ${j}`), ...prev.savedRules, ...prev.jumps.map((j) => `-I OUTPUT 1 ${j}`), 'COMMIT'];
}
