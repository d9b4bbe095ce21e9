import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ADDR, CLI, HERE, NOBODY, asUser, createTopology, nsRun, startInNs, startServe, type Topology } from './netns.js';

// The issue's proof of transparent capture: in an agent namespace confined by `firewall apply
// --transparent`, curl and a Go program with NO proxy variables reach an allowed HTTPS and an allowed
// plain-HTTP origin through the real proxy (its records say so), a denied name fails and is recorded, a
// TLS connection whose SNI is denied but whose address is an allowed origin's is refused, other ports stay
// dropped; IPv4 and IPv6, nftables and iptables, with the proxy as a sidecar in the agent's namespace and
// on the gateway. Names resolve through /etc/hosts in each namespace (`ip netns exec` bind-mounts
// /etc/netns/<ns>/hosts), for the agent and the proxy alike.
const run = promisify(execFile);

const TOOLS = [
  { name: 'nftables', tool: ['--tool', 'nftables'] },
  { name: 'iptables', tool: ['--tool', 'iptables'] },
] as const;

/** Where the proxy runs, which addresses its transparent listeners take, and who is confined. */
const SETUPS = [
  { name: 'sidecar in the agent namespace', where: 'agent', listen4: '127.0.0.1', listen6: '::1', agentUid: NOBODY, firewall: ['--proxy-uid', '0'] },
  { name: 'on the gateway', where: 'gateway', listen4: ADDR.gw4, listen6: ADDR.gw6, agentUid: undefined, firewall: [] },
] as const;

const HOSTS = [
  '127.0.0.1 localhost',
  '::1 localhost',
  `${ADDR.web4} allowed.example`,
  `${ADDR.web6} allowed.example`,
  `${ADDR.denied4} denied.example`,
  `${ADDR.denied6} denied.example`,
  '',
].join('\n');

type Rec = Record<string, unknown>;
/** Each case runs several clients in the namespaces: generous on a loaded machine. */
const SLOW = 120_000;

const shared = mkdtempSync(join(tmpdir(), 'ae-tpe2e-'));
chmodSync(shared, 0o755);
let goClient: Promise<string> | null = null;

/** The Go client, built once for every variant, into a directory `nobody` can read. */
function buildGo(): Promise<string> {
  goClient ??= (async () => {
    const dir = join(shared, 'go');
    mkdirSync(dir);
    writeFileSync(join(dir, 'main.go'), readFileSync(join(HERE, 'go-client', 'main.go')));
    const env = { ...process.env, GOCACHE: join(dir, 'cache'), GOPATH: join(dir, 'gopath'), GO111MODULE: 'off', GOPROXY: 'off', GOTOOLCHAIN: 'local', CGO_ENABLED: '0' };
    await run('go', ['build', '-o', join(dir, 'client'), join(dir, 'main.go')], { env, cwd: dir, timeout: 240_000 });
    chmodSync(join(dir, 'client'), 0o755);
    return join(dir, 'client');
  })();
  return goClient;
}

/** A CA-less self-signed certificate for allowed.example, readable by the agent. */
function makeCert(): { key: string; cert: string } {
  const key = join(shared, 'key.pem');
  const cert = join(shared, 'cert.pem');
  if (!existsSync(cert)) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=allowed.example', '-addext', 'subjectAltName=DNS:allowed.example,DNS:denied.example', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    chmodSync(cert, 0o644);
  }
  return { key, cert };
}

afterAll(() => rmSync(shared, { recursive: true, force: true }));

describe.each(TOOLS.flatMap((t) => SETUPS.map((s) => ({ ...t, setup: s, label: `${t.name}, proxy ${s.name}` }))))('transparent capture end to end: $label', (variant) => {
  const { setup } = variant;
  let topo: Topology;
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'ae-tpe2e-run-'));
  const logFile = join(dir, 'decisions.jsonl');
  let proxyOutput = () => '';
  let go = '';
  let cert = '';
  const netnsDirs: string[] = [];

  const proxyNs = () => (setup.where === 'agent' ? topo.agent : topo.gateway);
  const asAgent = () => (setup.agentUid === undefined ? [] : asUser(setup.agentUid));
  /** A command in the agent's namespace with an empty environment: no proxy variable can be inherited. */
  const agentRun = (...args: string[]) => nsRun(topo.agent, [...asAgent(), 'env', '-i', 'PATH=/usr/bin:/bin', ...args]);
  const curl = (...args: string[]) => agentRun('curl', '-sS', '--max-time', '10', '--cacert', cert, ...args);
  const goGet = (network: 'tcp4' | 'tcp6', url: string) => agentRun(go, cert, network, url);

  const records = (): Rec[] => (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Rec) : []);
  /** Run `action`, then wait (bounded) for a record it caused that matches `want`; resolves with it. */
  async function recordOf(action: () => void, want: Rec): Promise<Rec> {
    const before = records().length;
    action();
    for (let i = 0; i < 100; i++) {
      const found = records().slice(before).find((r) => Object.entries(want).every(([k, v]) => r[k] === v));
      if (found) return found;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no record matching ${JSON.stringify(want)} after the action; new records: ${JSON.stringify(records().slice(before))}\n${proxyOutput().slice(-1500)}`);
  }

  beforeAll(async () => {
    topo = createTopology();
    for (const ns of [topo.agent, topo.gateway]) {
      const d = `/etc/netns/${ns}`;
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'hosts'), HOSTS);
      chmodSync(join(d, 'hosts'), 0o644);
      netnsDirs.push(d);
    }
    cert = makeCert().cert;
    go = await buildGo();
    children.push(await startInNs(topo.origin, join(HERE, 'web-origin.mjs'), [makeCert().key, cert]));

    const proxy = await startServe(proxyNs(), [
      '--listen', `${setup.listen4 === '127.0.0.1' ? '127.0.0.1' : ADDR.gw4}:0`,
      // One listener per captured port, each on a free port; `[::]` takes IPv4 and IPv6 alike.
      '--transparent-listen', '80=[::]:0', '--transparent-listen', '443=[::]:0',
      // The resolver on each family's own address: a UDP answer from a wildcard socket would leave from
      // whatever address the route picks, not the one the query was redirected to, and be dropped.
      '--dns-listen', `${setup.listen4}:0`, '--dns-listen', `[${setup.listen6}]:0`,
      '--allow', 'allowed.example:443', '--allow', 'allowed.example:80', '--allow-address', '198.51.100.0/24', '--allow-address', '2001:db8::/32',
      '--log-file', logFile, '--data-dir', join(dir, 'data'), '--no-admin']);
    children.push(proxy.child);
    proxyOutput = proxy.output;
    const targets = transparentTargets(proxy.output(), setup.listen4, setup.listen6);
    const info = proxy.listening as { dns: string[] };
    const dns = info.dns.map((d) => `--dns=${d}`);
    if (dns.length !== 2) throw new Error(`expected two DNS listeners: ${proxy.output()}`);
    const r = nsRun(topo.agent, ['node', CLI, 'firewall', 'apply', ...variant.tool, ...setup.firewall, ...targets.map((t) => `--transparent=${t}`), ...dns]);
    if (r.code !== 0) throw new Error(`apply failed: ${r.stderr}`);
  }, 300_000);

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    topo?.destroy();
    for (const d of netnsDirs) rmSync(d, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(['-4', '-6'] as const)('curl %s, no proxy variables: the allowed HTTPS and plain-HTTP origins answer, through the proxy', async (fam) => {
    let out = '';
    const tls = await recordOf(() => (out = curl(fam, 'https://allowed.example/tls').stdout), { host: 'allowed.example', port: 443, verdict: 'allow' });
    expect(out).toBe('origin-ok https allowed.example /tls\n');
    expect(tls.capture).toBe('transparent');
    const plain = await recordOf(() => (out = curl(fam, 'http://allowed.example/plain').stdout), { host: 'allowed.example', port: 80, verdict: 'allow' });
    expect(out).toBe('origin-ok http allowed.example /plain\n');
    expect(plain.capture).toBe('transparent');
  }, SLOW);

  it.each(['tcp4', 'tcp6'] as const)('a Go program (%s), no proxy at all: the same', async (network) => {
    let out = '';
    const tls = await recordOf(() => (out = goGet(network, 'https://allowed.example/go').stdout), { host: 'allowed.example', port: 443, verdict: 'allow' });
    expect(out).toBe('200 origin-ok https allowed.example /go\n');
    expect(tls.capture).toBe('transparent');
    await recordOf(() => (out = goGet(network, 'http://allowed.example/go-plain').stdout), { host: 'allowed.example', port: 80, verdict: 'allow' });
    expect(out).toBe('200 origin-ok http allowed.example /go-plain\n');
  }, SLOW);

  it.each(['-4', '-6'] as const)('curl %s: a denied name fails and is recorded, over HTTPS and plain HTTP', async (fam) => {
    let r = { code: 0, stdout: '', stderr: '' };
    const tls = await recordOf(() => (r = curl(fam, 'https://denied.example/')), { host: 'denied.example', port: 443, verdict: 'deny' });
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('origin-ok');
    expect(tls.capture).toBe('transparent');
    await recordOf(() => (r = curl(fam, 'http://denied.example/')), { host: 'denied.example', port: 80, verdict: 'deny' });
    expect(r.stdout).not.toContain('origin-ok');
  }, SLOW);

  it.each([ADDR.web4, `[${ADDR.web6}]`])('a TLS connection to the allowed origin\'s address %s with a denied SNI is refused', async (addr) => {
    let r = { code: 0, stdout: '', stderr: '' };
    const rec = await recordOf(() => (r = agentRun('openssl', 's_client', '-connect', `${addr}:443`, '-servername', 'denied.example', '-CAfile', cert, '-verify_return_error')), {
      host: 'denied.example',
      port: 443,
      verdict: 'deny',
    });
    // The handshake never happened: no certificate reached the client, no cipher was agreed.
    expect(r.stdout).toContain('no peer certificate available');
    expect(r.stdout).toContain('Cipher is (NONE)');
    expect(rec.capture).toBe('transparent');
    // The control: the allowed name, sent to the same address, completes a verified handshake.
    const allowed = agentRun('openssl', 's_client', '-connect', `${addr}:443`, '-servername', 'allowed.example', '-CAfile', cert, '-verify_return_error');
    expect(allowed.stdout).toMatch(/subject=CN ?= ?allowed\.example/);
    expect(allowed.stdout).toContain('Verify return code: 0 (ok)');
    // The same with curl, the name pinned to the allowed origin's address.
    let pinned = { code: 0, stdout: '', stderr: '' };
    await recordOf(() => (pinned = curl('--resolve', `denied.example:443:${addr}`, 'https://denied.example/')), { host: 'denied.example', port: 443, verdict: 'deny', reason: 'no_rule' });
    expect(pinned.code).not.toBe(0);
    expect(pinned.stdout).not.toContain('origin-ok');
  }, SLOW);

  it.each([
    [ADDR.dns4, '+notcp'],
    [ADDR.dns6, '+tcp'],
  ])('DNS to any resolver (%s, %s) is answered by the filtering resolver, which refuses a denied name and records it', async (server, transport) => {
    let r = { code: 0, stdout: '', stderr: '' };
    // Nothing answers DNS at that address: only the redirect to the proxy's resolver can produce an answer.
    const rec = await recordOf(() => (r = agentRun('dig', `@${server}`, transport, '+tries=1', '+time=3', 'denied.example')), { method: 'DNS', host: 'denied.example', verdict: 'deny' });
    expect(r.stdout).toMatch(/status: NXDOMAIN/);
    expect(rec.reason).toBe('no_rule');
  }, SLOW);

  it('other ports stay refused, IPv4 and IPv6, without reaching the proxy', () => {
    const before = records().length;
    for (const fam of ['-4', '-6']) {
      const r = curl(fam, 'http://allowed.example:8080/');
      expect(r.code, `${fam} ${r.stdout}`).toBe(7);
    }
    expect(goGet('tcp4', 'http://allowed.example:8080/').stdout).toMatch(/^error .*connection refused/);
    expect(records().slice(before)).toEqual([]);
  }, SLOW);
});

/**
 * `--transparent CAPTURED=HOST:PORT` for each listener the proxy says it bound (one log line each), once per
 * family: the firewall DNATs IPv4 to `v4` and IPv6 to `v6`, the port the proxy picked for that captured port.
 */
function transparentTargets(out: string, v4: string, v6: string): string[] {
  const bound = out
    .split('\n')
    .filter((l) => l.includes('agent-egress transparent listener'))
    .map((l) => JSON.parse(l) as { capturedPort: number; listen: string });
  if (bound.length !== 2) throw new Error(`expected two transparent listeners, the proxy said: ${out}`);
  return bound.flatMap((b) => {
    const port = Number(b.listen.slice(b.listen.lastIndexOf(':') + 1));
    return [`${b.capturedPort}=${v4}:${port}`, `${b.capturedPort}=[${v6}]:${port}`];
  });
}
