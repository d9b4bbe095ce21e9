import { parseIpEndpoint, parsePort, splitHostPort } from '../net/endpoint.js';
import { parseCidr, type Cidr, type IpFamily } from '../net/ip.js';
import { isLoopbackEndpoint, parseRedirects, redirectText, type RawRedirectFlags, type Redirect } from './transparent.js';

/** Input a user gave that cannot become a rule set; the CLI exits 2 on it. */
export class FirewallOptionError extends Error {
  override name = 'FirewallOptionError';
}

export interface Endpoint {
  family: IpFamily;
  /** Canonical address text. */
  address: string;
  port: number;
}

export interface AllowedDest {
  cidr: Cidr;
  /** TCP/UDP ports; empty = every port and protocol. */
  ports: number[];
}

/** An inclusive port range; a single port has `from === to`. */
export interface PortRange {
  from: number;
  to: number;
}

export type FirewallAction = 'reject' | 'drop';

/** Everything a rule set is rendered from, already validated: renderers never fail on it. */
export interface FirewallOptions {
  /** Proxy listeners the agent may open TCP connections to. */
  proxies: Endpoint[];
  /** Users whose traffic is not confined at all (same-host mode: the proxy process itself). */
  proxyUids: number[];
  /** When non-empty, only these users are confined; everyone else is left alone. Empty = the whole namespace. */
  agentUids: number[];
  /** Resolvers the agent may query (UDP and TCP). Default none: the proxy resolves names. */
  dnsServers: Endpoint[];
  allowDests: AllowedDest[];
  /**
   * Ports on this host's own addresses (loopback and the interfaces' addresses, i.e. what leaves through
   * `lo`) the agent may use for servers it runs itself. Nothing else on loopback is reachable.
   */
  agentLocalPorts: PortRange[];
  /**
   * NAT redirects of the confined traffic (transparent capture, DNS): new connections to these ports go
   * to the proxy's transparent listener or the filtering resolver. Empty = nothing is redirected.
   */
  redirects: Redirect[];
  /** Configurations that load but probably do not do what was meant; the CLI prints them on stderr. */
  warnings: string[];
  action: FirewallAction;
  logPrefix: string;
  /** Log at most this many refused packets per minute, so a tight loop cannot flood the kernel log. */
  logPerMinute: number;
}

export interface RawFirewallFlags extends RawRedirectFlags {
  proxy?: string[];
  proxyUid?: string[];
  agentUid?: string[];
  dnsServer?: string[];
  allowDest?: string[];
  agentLocalPort?: string[];
  action?: string;
  logPrefix?: string;
  logRate?: string;
}

export const DEFAULT_LOG_PREFIX = 'agent-egress-drop: ';

/** Parse `ADDR:PORT` / `[V6]:PORT`; `defaultPort` allows a bare address. */
export function parseEndpoint(text: string, defaultPort?: number): Endpoint {
  // Names are refused (parseIpEndpoint): a rule resolved once at apply time would silently go stale.
  try {
    const e = parseIpEndpoint(text, { defaultPort });
    return { family: e.family, address: e.address, port: e.port };
  } catch (err) {
    throw new FirewallOptionError(`${JSON.stringify(text)}: ${(err as Error).message}`);
  }
}

function firewallPort(s: string, ctx: string): number {
  try {
    return parsePort(s, ctx);
  } catch (err) {
    throw new FirewallOptionError((err as Error).message);
  }
}

function parseUid(s: string): number {
  if (!/^\d{1,10}$/.test(s) || Number(s) > 0xfffffffe) throw new FirewallOptionError(`bad uid ${JSON.stringify(s)} (numeric uid expected)`);
  return Number(s);
}

/** `CIDR` or `CIDR:PORT[,PORT...]`; IPv6 CIDRs with ports are written `[fd00::/64]:443`. */
export function parseAllowedDest(text: string): AllowedDest {
  let parts: { host: string; port: string | null };
  try {
    parts = splitHostPort(text);
  } catch (err) {
    throw new FirewallOptionError(`bad destination ${JSON.stringify(text)}: ${(err as Error).message}`);
  }
  let cidr: Cidr;
  try {
    cidr = parseCidr(parts.host);
  } catch (err) {
    throw new FirewallOptionError(`${JSON.stringify(text)}: ${(err as Error).message}`);
  }
  const ports = parts.port === null ? [] : parts.port.split(',').map((p) => firewallPort(p, text));
  return { cidr, ports: [...new Set(ports)].sort((a, b) => a - b) };
}

/** `PORT[,PORT|FROM-TO...]`, as `--agent-local-port` takes it. */
export function parsePortRanges(text: string, flag: string): PortRange[] {
  return text.split(',').map((item) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    if (!m) throw new FirewallOptionError(`${flag}: bad port or range ${JSON.stringify(item)} (PORT or FROM-TO)`);
    const from = firewallPort(m[1], flag);
    const to = m[2] === undefined ? from : firewallPort(m[2], flag);
    if (to < from) throw new FirewallOptionError(`${flag}: range ${JSON.stringify(item)} ends before it starts`);
    return { from, to };
  });
}

// Printable ASCII without quotes/backslash: the prefix lands inside quoted rule text for two tools.
const PREFIX_RE = /^[A-Za-z0-9 _.:=-]{1,28}$/;

export function parseFirewallOptions(raw: RawFirewallFlags): FirewallOptions {
  const proxies = dedupe((raw.proxy ?? []).map((p) => parseEndpoint(p)), epKey);
  const redirects = parseRedirects(raw);
  if (proxies.length === 0 && redirects.length === 0) {
    throw new FirewallOptionError('at least one --proxy ADDR:PORT or --transparent HOST:PORT is required (the agent could reach nothing)');
  }
  const action = raw.action ?? 'reject';
  if (action !== 'reject' && action !== 'drop') throw new FirewallOptionError(`--action must be reject or drop, not ${JSON.stringify(action)}`);
  const logPrefix = raw.logPrefix ?? DEFAULT_LOG_PREFIX;
  // iptables limits LOG prefixes to 29 bytes including the terminator.
  if (!PREFIX_RE.test(logPrefix)) throw new FirewallOptionError('--log-prefix: 1-28 characters of letters, digits, space, _ . : = -');
  let logPerMinute = 10;
  if (raw.logRate !== undefined) {
    if (!/^\d{1,4}$/.test(raw.logRate) || Number(raw.logRate) < 1) throw new FirewallOptionError('--log-rate: log lines per minute, 1-9999');
    logPerMinute = Number(raw.logRate);
  }
  const proxyUids = [...new Set((raw.proxyUid ?? []).map(parseUid))];
  const agentUids = [...new Set((raw.agentUid ?? []).map(parseUid))];
  checkRedirectTargets(redirects, proxies);
  return {
    proxies,
    proxyUids,
    agentUids,
    dnsServers: dedupe((raw.dnsServer ?? []).map((d) => parseEndpoint(d, 53)), epKey),
    allowDests: dedupe((raw.allowDest ?? []).map(parseAllowedDest), (d) => `${d.cidr.text}|${d.ports.join(',')}`),
    agentLocalPorts: dedupe(
      (raw.agentLocalPort ?? []).flatMap((t) => parsePortRanges(t, '--agent-local-port')),
      (r) => `${r.from}-${r.to}`,
    ).sort((a, b) => a.from - b.from),
    redirects,
    warnings: selfRedirectWarnings(redirects, proxyUids.length + agentUids.length > 0),
    action,
    logPrefix,
    logPerMinute,
  };
}

/** A target that is also an explicit proxy listener would hand raw TLS to the HTTP parser. */
function checkRedirectTargets(redirects: Redirect[], proxies: Endpoint[]): void {
  for (const r of redirects) {
    if (r.protocol === 'tcp' && proxies.some((p) => epKey(p) === epKey(r.to))) {
      throw new FirewallOptionError(`${redirectText(r)}: the target is also a --proxy listener (use the proxy's --transparent-listen address)`);
    }
  }
}

/**
 * A listener on loopback runs in this namespace, so unless its user is exempt (--proxy-uid) or only the
 * agent's user is confined (--agent-uid), the proxy's own connections to the captured ports would be
 * redirected back to itself. Still fail-closed (nothing leaves unchecked), so it is said, not refused:
 * a stand-in listener, or rules rendered for review, are legitimate.
 */
function selfRedirectWarnings(redirects: Redirect[], usersNamed: boolean): string[] {
  const loopback = redirects.filter((r) => isLoopbackEndpoint(r.to));
  if (usersNamed || loopback.length === 0) return [];
  return [
    `${loopback.map(redirectText).join(', ')}: a listener on loopback runs in this namespace; without --proxy-uid (the proxy's user) or --agent-uid, the proxy's own connections are redirected to itself`,
  ];
}

function epKey(e: Endpoint): string {
  return `${e.address}|${e.port}`;
}

function dedupe<T>(items: T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((i) => (seen.has(key(i)) ? false : (seen.add(key(i)), true)));
}

/** Bare address of a CIDR that covers exactly one host, else the CIDR text: the rule tools accept both. */
export function cidrArg(c: Cidr): string {
  const max = c.family === 4 ? 32 : 128;
  return c.range[1] === max ? c.text.slice(0, c.text.lastIndexOf('/')) : c.text;
}
