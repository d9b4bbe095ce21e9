import { DEFAULT_CAPTURE_PORTS, parseCapturePorts, TransparentConfigError } from '../capture/mapping.js';
import type { IpFamily } from '../net/ip.js';
import { FirewallOptionError, parseEndpoint, type Endpoint } from './options.js';

/**
 * One NAT redirect of the agent's new connections: `protocol` traffic to destination port `port` (any
 * address) goes to `to` instead. The transparent listener learns the original port from the port it was
 * reached on (one listening socket per captured port), so no two redirects may share a target.
 */
export interface Redirect {
  protocol: 'tcp' | 'udp';
  port: number;
  to: Endpoint;
  /** Why this redirect exists: `capture` (--transparent) or `dns` (--dns). */
  kind: 'capture' | 'dns';
}

export interface RawRedirectFlags {
  transparent?: string[];
  capturePorts?: string[];
  dns?: string[];
}

const MAX_PORT = 65535;

function capturePort(s: string, ctx: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > MAX_PORT) throw new FirewallOptionError(`${ctx}: bad port ${JSON.stringify(s)} (1-65535)`);
  return Number(s);
}

function target(text: string, ctx: string): Endpoint {
  try {
    return parseEndpoint(text);
  } catch (err) {
    throw new FirewallOptionError(`${ctx} ${(err as Error).message}`);
  }
}

export function isLoopbackEndpoint(e: Endpoint): boolean {
  return e.family === 4 ? e.address.startsWith('127.') : e.address === '::1';
}

/**
 * `--transparent HOST:PORT [--capture-ports 80,443]` (captured port i goes to PORT+i) and
 * `--transparent 443=HOST:PORT` (one captured port to one address), repeatable and per address family;
 * `--dns HOST[:PORT]` sends UDP and TCP port 53 to the filtering resolver.
 */
export function parseRedirects(raw: RawRedirectFlags): Redirect[] {
  const out: Redirect[] = [];
  // The list is read by serve's own parser, so both sides accept and number exactly the same ports.
  const capturePorts = raw.capturePorts && raw.capturePorts.length > 0 ? captureList(raw.capturePorts.join(',')) : [];
  const ports = capturePorts.length > 0 ? capturePorts : DEFAULT_CAPTURE_PORTS;
  const baseFamilies = new Set<IpFamily>();
  for (const text of raw.transparent ?? []) {
    const eq = text.indexOf('=');
    if (eq === -1) {
      const base = target(text, '--transparent');
      if (baseFamilies.has(base.family)) {
        throw new FirewallOptionError(`--transparent ${text}: a second HOST:PORT for IPv${base.family} (one base address per family; map single ports with PORT=HOST:PORT)`);
      }
      baseFamilies.add(base.family);
      ports.forEach((port, i) => {
        if (base.port + i > MAX_PORT) throw new FirewallOptionError(`--transparent ${text}: captured port ${port} would be served at ${base.port + i}, above 65535`);
        out.push({ protocol: 'tcp', port, to: { ...base, port: base.port + i }, kind: 'capture' });
      });
    } else {
      const port = capturePort(text.slice(0, eq), `--transparent ${text}`);
      out.push({ protocol: 'tcp', port, to: target(text.slice(eq + 1), `--transparent ${text}:`), kind: 'capture' });
    }
  }
  if (capturePorts.length > 0 && baseFamilies.size === 0) {
    throw new FirewallOptionError('--capture-ports needs a --transparent HOST:PORT to number the listener ports from');
  }
  for (const text of raw.dns ?? []) {
    const to = dnsTarget(text);
    for (const protocol of ['udp', 'tcp'] as const) out.push({ protocol, port: 53, to, kind: 'dns' });
  }
  checkUnique(out);
  return out.sort((a, b) => a.to.family - b.to.family || a.protocol.localeCompare(b.protocol) || a.port - b.port);
}

function captureList(text: string): number[] {
  try {
    return parseCapturePorts(text);
  } catch (err) {
    if (err instanceof TransparentConfigError) throw new FirewallOptionError(err.message);
    throw err;
  }
}

function dnsTarget(text: string): Endpoint {
  try {
    return parseEndpoint(text, 53);
  } catch (err) {
    throw new FirewallOptionError(`--dns ${(err as Error).message}`);
  }
}

function show(r: Redirect): string {
  const to = r.to.family === 6 ? `[${r.to.address}]:${r.to.port}` : `${r.to.address}:${r.to.port}`;
  return `${r.protocol}/${r.port} -> ${to}`;
}

/** A port redirected twice in one family is ambiguous; a target shared by two ports loses the original port. */
function checkUnique(rs: Redirect[]): void {
  const byPort = new Map<string, Redirect>();
  const byTarget = new Map<string, Redirect>();
  for (const r of rs) {
    const pk = `${r.to.family}|${r.protocol}|${r.port}`;
    const prev = byPort.get(pk);
    if (prev) throw new FirewallOptionError(`IPv${r.to.family} ${r.protocol} port ${r.port} is redirected twice (${show(prev)} and ${show(r)})`);
    byPort.set(pk, r);
    const tk = `${r.protocol}|${r.to.address}|${r.to.port}`;
    const other = byTarget.get(tk);
    if (other) throw new FirewallOptionError(`${show(other)} and ${show(r)} share a target: the listener could not tell the original ports apart`);
    byTarget.set(tk, r);
  }
}

export function redirectText(r: Redirect): string {
  return show(r);
}
