import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { basename, dirname, join } from 'node:path';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '..', '..');
/** Entry point for the firewall/certs commands (see cli.mjs). */
export const CLI = join(HERE, 'cli.mjs');

/**
 * Addresses exist only inside the test's own namespaces. The origin's are documentation ranges
 * standing in for "somewhere on the internet" (a web server and a public-looking resolver).
 */
export const ADDR = {
  agent4: '10.231.1.2',
  agent6: 'fd31:1::2',
  gw4: '10.231.1.1',
  gw6: 'fd31:1::1',
  gwOrigin4: '10.231.2.1',
  gwOrigin6: 'fd31:2::1',
  originLink4: '10.231.2.2',
  originLink6: 'fd31:2::2',
  web4: '198.51.100.10',
  web6: '2001:db8::10',
  dns4: '198.51.100.53',
  dns6: '2001:db8::53',
  denied4: '198.51.100.20',
  denied6: '2001:db8::20',
};

/** The unprivileged user tests run agents as. */
export const NOBODY = 65534;

let readableDir: string | null = null;
const copied = new Set<string>();

/**
 * A copy of a test script that any user can read. The checkout may sit in a private directory (a 0700
 * `mktemp -d`, root's home), where a process running as another user cannot read it. The scripts so
 * copied import only node builtins.
 */
export function readableScript(name: string): string {
  if (!readableDir) {
    const dir = mkdtempSync(join(tmpdir(), 'ae-fw-scripts-'));
    chmodSync(dir, 0o755);
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    readableDir = dir;
  }
  const dest = join(readableDir, basename(name));
  // Copied once: copying again while a process started a moment ago is still reading the file would hand
  // it a truncated script (tests start several listeners at once).
  if (!copied.has(dest)) {
    copyFileSync(join(HERE, name), dest);
    chmodSync(dest, 0o644);
    copied.add(dest);
  }
  return dest;
}

/** argv prefix that runs the rest as `uid` (same gid, no supplementary groups). */
export function asUser(uid: number): string[] {
  return ['setpriv', '--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
}

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 20_000, input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Run in a namespace; returns exit code and output instead of throwing. */
export function nsRun(ns: string, args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', timeout: 30_000, input, stdio: ['pipe', 'pipe', 'pipe'] });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e as { status: number | null; stdout?: string; stderr?: string };
    return { code: err.status ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

export interface Topology {
  agent: string;
  gateway: string;
  origin: string;
  destroy(): void;
}

/**
 * agent <-veth-> gateway <-veth-> origin. The gateway routes, so without rules the agent reaches the
 * origin directly; the gateway is also where a proxy runs. Names are unique per run.
 */
export function createTopology(): Topology {
  const id = randomBytes(3).toString('hex');
  const agent = `ae-a-${id}`;
  const gateway = `ae-g-${id}`;
  const origin = `ae-o-${id}`;
  const created: string[] = [];
  const destroy = () => {
    for (const ns of created) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
    }
  };
  try {
    for (const ns of [agent, gateway, origin]) {
      sh('ip', ['netns', 'add', ns]);
      created.push(ns);
    }
    const x = (ns: string, ...a: string[]) => sh('ip', ['-n', ns, ...a]);
    const sysctl = (ns: string, kv: string) => sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv]);
    sh('ip', ['link', 'add', `aea${id}`, 'netns', agent, 'type', 'veth', 'peer', 'name', `aeg${id}`, 'netns', gateway]);
    sh('ip', ['link', 'add', `aeh${id}`, 'netns', gateway, 'type', 'veth', 'peer', 'name', `aeo${id}`, 'netns', origin]);
    for (const ns of [agent, gateway, origin]) x(ns, 'link', 'set', 'lo', 'up');
    sysctl(gateway, 'net.ipv4.ip_forward=1');
    sysctl(gateway, 'net.ipv6.conf.all.forwarding=1');
    x(agent, 'addr', 'add', `${ADDR.agent4}/24`, 'dev', `aea${id}`);
    x(agent, 'addr', 'add', `${ADDR.agent6}/64`, 'dev', `aea${id}`, 'nodad');
    x(agent, 'link', 'set', `aea${id}`, 'up');
    x(agent, 'route', 'add', 'default', 'via', ADDR.gw4);
    x(agent, '-6', 'route', 'add', 'default', 'via', ADDR.gw6);
    x(gateway, 'addr', 'add', `${ADDR.gw4}/24`, 'dev', `aeg${id}`);
    x(gateway, 'addr', 'add', `${ADDR.gw6}/64`, 'dev', `aeg${id}`, 'nodad');
    x(gateway, 'addr', 'add', `${ADDR.gwOrigin4}/24`, 'dev', `aeh${id}`);
    x(gateway, 'addr', 'add', `${ADDR.gwOrigin6}/64`, 'dev', `aeh${id}`, 'nodad');
    x(gateway, 'link', 'set', `aeg${id}`, 'up');
    x(gateway, 'link', 'set', `aeh${id}`, 'up');
    x(gateway, 'route', 'add', '198.51.100.0/24', 'via', ADDR.originLink4);
    x(gateway, '-6', 'route', 'add', '2001:db8::/32', 'via', ADDR.originLink6);
    x(origin, 'addr', 'add', `${ADDR.originLink4}/24`, 'dev', `aeo${id}`);
    x(origin, 'addr', 'add', `${ADDR.originLink6}/64`, 'dev', `aeo${id}`, 'nodad');
    x(origin, 'link', 'set', `aeo${id}`, 'up');
    for (const a of [ADDR.web4, ADDR.dns4, ADDR.denied4]) x(origin, 'addr', 'add', `${a}/32`, 'dev', 'lo');
    for (const a of [ADDR.web6, ADDR.dns6, ADDR.denied6]) x(origin, 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad');
    x(origin, 'route', 'add', 'default', 'via', ADDR.gwOrigin4);
    x(origin, '-6', 'route', 'add', 'default', 'via', ADDR.gwOrigin6);
  } catch (err) {
    destroy();
    throw err;
  }
  return { agent, gateway, origin, destroy };
}

/** Start a node script inside a namespace (as `uid`, default root) and wait (bounded) for it to print `ready`. */
export function startInNs(ns: string, script: string, args: string[] = [], uid?: number): Promise<ChildProcess> {
  return startReady(ns, script, args, uid).then((r) => r.child);
}

/** Like startInNs, and also returns what followed `ready` on its line (listen.mjs prints its port there). */
export function startReady(ns: string, script: string, args: string[] = [], uid?: number): Promise<{ child: ChildProcess; said: string }> {
  const prefix = uid === undefined ? [] : asUser(uid);
  const child = spawn('ip', ['netns', 'exec', ns, ...prefix, 'node', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} did not become ready: ${out}`));
    }, 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /ready ?([^\n]*)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, said: m[1].trim() });
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited ${code}: ${out}`));
    });
  });
}

export interface ProbeResult {
  ok: boolean;
  error?: string;
  body?: string;
}

/** Start listen.mjs on HOST:0 inside a namespace as `uid` (default root); resolves with its port. */
export async function startListener(ns: string, host: string, uid?: number): Promise<{ child: ChildProcess; port: number }> {
  const { child, said } = await startReady(ns, readableScript('listen.mjs'), [host], uid);
  return { child, port: Number(said) };
}

/** One direct TCP or UDP attempt from inside a namespace (see probe.mjs), as `uid` (default root). */
export function probe(ns: string, proto: 'tcp' | 'udp', host: string, port: number, uid?: number): ProbeResult {
  const prefix = uid === undefined ? [] : asUser(uid);
  const r = nsRun(ns, [...prefix, 'node', readableScript('probe.mjs'), proto, host, String(port)]);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ProbeResult;
  } catch {
    return { ok: false, error: `probe failed: ${r.stderr || r.stdout}` };
  }
}

/** Every rule tool the namespace tests load into a real kernel. */
export const RULE_VARIANTS = [
  { name: 'nftables', tool: ['--tool', 'nftables'], backend: null },
  { name: 'iptables (nft backend)', tool: ['--tool', 'iptables', '--backend', 'nft'], backend: 'nft' },
  { name: 'iptables (legacy backend)', tool: ['--tool', 'iptables', '--backend', 'legacy'], backend: 'legacy' },
] as const;

/** Who the rule confines: everyone but the proxy's uid, or only the agent's uid. */
export const CONFINE_MODES = [
  { name: 'everyone but --proxy-uid 0', flags: ['--proxy-uid', '0'] },
  { name: 'only --agent-uid nobody', flags: ['--agent-uid', String(NOBODY)] },
] as const;

/** `agent-egress firewall ARGS` on this host (render needs no namespace); exit code and both outputs, never a throw. */
export function firewallCli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('node', [CLI, 'firewall', ...args], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export interface ServeInNs {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** The parsed `agent-egress proxy listening` line. */
  listening: Record<string, unknown>;
}

/** Start the real proxy (`serve ARGS`) inside a namespace and wait, bounded, for it to say it listens. */
export async function startServe(ns: string, args: string[]): Promise<ServeInNs> {
  const child = spawn('ip', ['netns', 'exec', ns, 'node', join(ROOT, 'bin', 'agent-egress.js'), 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  // A loaded CI machine can take a while to start node.
  for (let i = 0; i < 120 && !out.includes('agent-egress proxy listening'); i++) {
    if (child.exitCode !== null) throw new Error(`proxy exited: ${out}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const line = out.split('\n').find((l) => l.includes('agent-egress proxy listening'));
  if (!line) {
    child.kill('SIGKILL');
    throw new Error(`proxy did not start: ${out}`);
  }
  return { child, output: () => out, listening: JSON.parse(line) as Record<string, unknown> };
}
