import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { closeServer, startHttpOrigin, startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-socks-clients-'));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

let dns: TestDnsServer;
let origin: Origin;
let tlsOrigin: Origin;
let git: { port: number; server: Server; paths: string[] };
let ssh: { port: number; server: NetServer; banners: string[] };
let proxy: TestProxy;
let socks: string;

/** A bare repository served over git's dumb HTTP protocol by a plain static file server. */
async function startGitOrigin(): Promise<typeof git> {
  const work = join(dir, 'work');
  const bare = join(dir, 'srv', 'repo.git');
  mkdirSync(work, { recursive: true });
  const g = (args: string[], cwd: string) => execFileSync('git', args, { cwd, stdio: 'pipe', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } });
  g(['init', '-q', '-b', 'main'], work);
  writeFileSync(join(work, 'README'), 'through socks\n');
  g(['add', 'README'], work);
  g(['commit', '-q', '-m', 'first'], work);
  g(['clone', '-q', '--bare', work, bare], dir);
  g(['update-server-info'], bare);
  const root = join(dir, 'srv');
  const paths: string[] = [];
  const server = createHttpServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]);
    paths.push(path);
    const file = normalize(join(root, path));
    try {
      if (!file.startsWith(root) || !statSync(file).isFile()) throw new Error('no');
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(readFileSync(file));
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, paths };
}

/** Speaks the first line of SSH (its identification banner), remembers what the client announced, then fails the key exchange. */
async function startSshBanner(): Promise<typeof ssh> {
  const banners: string[] = [];
  const server = createNetServer((s) => {
    s.on('error', () => s.destroy());
    s.write('SSH-2.0-AgentEgressTest_1.0\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl !== -1) {
        banners.push(buf.slice(0, nl).trim());
        // An impossible packet length makes ssh give up at once ("Bad packet length"), which closes its
        // ProxyCommand; a server that merely closed would leave netcat (and ssh) waiting on each other.
        s.end(Buffer.alloc(64, 0xff));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, banners };
}

/** The python3 that has the SOCKS extras (.ci/run installs them from Debian; a pyenv python3 may lack them). */
function pythonWithSocks(): string {
  for (const py of ['python3', '/usr/bin/python3']) {
    try {
      execFileSync(py, ['-c', 'import socks, requests, httpx, socksio'], { stdio: 'ignore' });
      return py;
    } catch {
      // try the next one
    }
  }
  throw new Error('no python3 with PySocks, requests, httpx and socksio: install python3-socks python3-httpx python3-socksio (see .ci/run)');
}

beforeAll(async () => {
  dns = await startTestDnsServer({
    'allowed.test': { A: ['127.0.0.1'] },
    'git.test': { A: ['127.0.0.1'] },
    'ssh.test': { A: ['127.0.0.1'] },
    'denied.test': { A: ['127.0.0.1'] },
  });
  origin = await startHttpOrigin();
  tlsOrigin = await startHttpsOrigin();
  git = await startGitOrigin();
  ssh = await startSshBanner();
  const file = join(dir, 'policy.yaml');
  writeFileSync(
    file,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: web
    action: allow
    hosts: [allowed.test]
    cidrs: [127.0.0.1/32]
    ports: [${origin.port}, ${tlsOrigin.port}]
  - name: git
    action: allow
    hosts: [git.test]
    ports: [${git.port}]
  - name: ssh
    action: allow
    hosts: [ssh.test]
    ports: [${ssh.port}]
  - name: no-denied
    action: deny
    hosts: [denied.test]
agents:
  - name: coder
    token_sha256: "${sha('s3cret')}"
`,
  );
  proxy = await startTestProxy({ policyFile: file, flags: { allow: [], deny: [], allowAddress: [] }, dnsServers: [`127.0.0.1:${dns.port}`], socks: { listen: '127.0.0.1:0' } });
  socks = `127.0.0.1:${proxy.egress.socks!.address.port}`;
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await tlsOrigin?.close();
  if (git) await closeServer(git.server);
  if (ssh) await new Promise((r) => ssh.server.close(r));
  await dns?.close();
});

/** No proxy variables from the environment leak into a client, except those a test sets. */
const cleanEnv = (extra: Record<string, string> = {}) => {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!/_proxy$/i.test(k) && v !== undefined) env[k] = v;
  return { ...env, ...extra };
};

const socksRecord = (pred: (r: TestProxy['sink']['records'][number]) => boolean) => proxy.sink.waitFor((r) => r.method === 'SOCKS5' && pred(r));

describe('curl', () => {
  it('--socks5-hostname: the proxy resolves the name, and the tunnel is recorded', async () => {
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', socks, `http://allowed.test:${origin.port}/`], { env: cleanEnv() });
    expect(stdout).toBe('hello');
    const rec = await socksRecord((r) => r.host === 'allowed.test' && r.bytesDown > 0);
    expect(rec).toMatchObject({ verdict: 'allow', rule: 'web', address: '127.0.0.1', port: origin.port, status: 200 });
  });

  it('--socks5 with an IP address', async () => {
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--socks5', socks, `http://127.0.0.1:${origin.port}/`], { env: cleanEnv() });
    expect(stdout).toBe('hello');
    expect(await socksRecord((r) => r.host === '127.0.0.1' && r.bytesDown > 0)).toMatchObject({ rule: 'web' });
  });

  it('HTTPS through --socks5-hostname: TLS end to end, the proxy sees only the tunnel', async () => {
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, testCert().cert);
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--cacert', ca, '--socks5-hostname', socks, `https://allowed.test:${tlsOrigin.port}/`], { env: cleanEnv() });
    expect(stdout).toBe('hello');
    expect(await socksRecord((r) => r.host === 'allowed.test' && r.port === tlsOrigin.port && r.bytesDown > 0)).toMatchObject({ verdict: 'allow' });
  });

  it('ALL_PROXY=socks5h:// with credentials names the agent', async () => {
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', `http://allowed.test:${origin.port}/`], { env: cleanEnv({ ALL_PROXY: `socks5h://coder:s3cret@${socks}` }) });
    expect(stdout).toBe('hello');
    expect(await socksRecord((r) => r.agent === 'coder' && r.bytesDown > 0)).toMatchObject({ host: 'allowed.test', rule: 'web' });
  });

  it('a denied name: curl reports the SOCKS refusal (exit 97), and the deny is recorded', async () => {
    const err = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', socks, `http://denied.test:${origin.port}/`], { env: cleanEnv() }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(97);
    expect(err?.stderr).toMatch(/SOCKS5/);
    expect(await socksRecord((r) => r.host === 'denied.test')).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'no-denied' });
  });

  it('wrong credentials: curl fails authentication, recorded as auth_required', async () => {
    const err = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', socks, '--proxy-user', 'coder:nope', `http://allowed.test:${origin.port}/`], { env: cleanEnv() }).then(
      () => null,
      (e: { code: number }) => e,
    );
    expect(err?.code).toBe(97);
    expect(await socksRecord((r) => r.reason === 'auth_required')).toMatchObject({ status: 407, agent: null });
  });
});

describe('git', () => {
  it('ALL_PROXY=socks5h:// with git ls-remote and clone over HTTP', async () => {
    const url = `http://git.test:${git.port}/repo.git`;
    const env = cleanEnv({ ALL_PROXY: `socks5h://${socks}`, GIT_TERMINAL_PROMPT: '0', HOME: dir });
    const { stdout } = await run('git', ['ls-remote', url], { env });
    expect(stdout).toMatch(/^[0-9a-f]{40}\trefs\/heads\/main$/m);
    const dest = join(dir, 'cloned');
    await run('git', ['clone', '-q', url, dest], { env });
    expect(readFileSync(join(dest, 'README'), 'utf8')).toBe('through socks\n');
    expect(git.paths).toContain('/repo.git/info/refs');
    expect(await socksRecord((r) => r.host === 'git.test' && r.bytesDown > 0)).toMatchObject({ rule: 'git', verdict: 'allow' });
  });

  it('git -c http.proxy=socks5h://', async () => {
    const before = proxy.sink.records.filter((r) => r.method === 'SOCKS5' && r.host === 'git.test').length;
    const { stdout } = await run('git', ['-c', `http.proxy=socks5h://${socks}`, 'ls-remote', `http://git.test:${git.port}/repo.git`], { env: cleanEnv({ GIT_TERMINAL_PROMPT: '0', HOME: dir }) });
    expect(stdout).toMatch(/refs\/heads\/main/);
    await proxy.sink.waitFor(() => proxy.sink.records.filter((r) => r.method === 'SOCKS5' && r.host === 'git.test').length > before);
  });
});

describe('ssh through ProxyCommand', () => {
  const sshArgs = (proxyCommand: string) => [
    '-o', `ProxyCommand=${proxyCommand}`,
    '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10',
    '-p', String(ssh.port), '-v', 'agent@ssh.test', 'true',
  ];
  const sshRun = (proxyCommand: string) =>
    run('ssh', sshArgs(proxyCommand), { env: cleanEnv({ HOME: dir }) }).then(
      (r) => r.stderr,
      (e: { stderr: string }) => e.stderr,
    );

  it('OpenBSD netcat -X 5: the SSH banners cross the proxy both ways', async () => {
    const n = ssh.banners.length;
    const stderr = await sshRun(`nc -X 5 -x ${socks} %h %p`);
    expect(stderr).toContain('remote software version AgentEgressTest_1.0');
    expect(ssh.banners.length).toBe(n + 1);
    expect(ssh.banners[n]).toMatch(/^SSH-2\.0-OpenSSH/);
    expect(await socksRecord((r) => r.host === 'ssh.test' && r.bytesUp > 0)).toMatchObject({ rule: 'ssh', verdict: 'allow', port: ssh.port });
  });

  it('ncat --proxy-type socks5 with remote name resolution', async () => {
    const n = ssh.banners.length;
    const stderr = await sshRun(`ncat --proxy ${socks} --proxy-type socks5 --proxy-dns remote %h %p`);
    expect(stderr).toContain('remote software version AgentEgressTest_1.0');
    expect(ssh.banners.length).toBe(n + 1);
  });
});

describe('python', () => {
  it('requests with PySocks (socks5h://) and httpx with socksio reach the origin through the proxy', async () => {
    const py = pythonWithSocks();
    const url = `http://allowed.test:${origin.port}/echo`;
    const { stdout: viaRequests } = await run(py, ['-c', 'import sys, requests; print(requests.get(sys.argv[1], proxies={"http": sys.argv[2]}, timeout=10).json()["url"])', url, `socks5h://coder:s3cret@${socks}`], {
      env: cleanEnv(),
    });
    expect(viaRequests.trim()).toBe('/echo');
    expect(await socksRecord((r) => r.agent === 'coder' && r.host === 'allowed.test' && r.bytesDown > 0)).toMatchObject({ rule: 'web' });
    // httpx sends the name to the proxy (remote resolution) with socks5://.
    const { stdout: viaHttpx } = await run(py, ['-c', 'import sys, httpx; print(httpx.Client(proxies=sys.argv[2]).get(sys.argv[1]).json()["url"])', url, `socks5://${socks}`], { env: cleanEnv() });
    expect(viaHttpx.trim()).toBe('/echo');
  });
});

describe('the CLI flag and its environment variable', () => {
  it('AGENT_EGRESS_SOCKS_LISTEN starts the listener (with its address in the start line); a bad value is exit 2', async () => {
    const child = spawn('node', [BIN, 'serve', '--listen', '127.0.0.1:0', '--no-store', '--allow', `allowed.test:${origin.port}`, '--allow-address', '127.0.0.1/32', '--dns-server', `127.0.0.1:${dns.port}`, '--log-format', 'json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({ AGENT_EGRESS_SOCKS_LISTEN: '127.0.0.1:0' }),
    });
    try {
      let err = '';
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const started = await new Promise<{ socks: string }>((resolve, reject) => {
        child.stderr.on('data', (d) => {
          err += d;
          const line = err.split('\n').find((l) => l.includes('agent-egress proxy listening'));
          if (line) resolve(JSON.parse(line));
        });
        child.once('exit', (c) => reject(new Error(`exited ${c}: ${err}`)));
      });
      expect(started.socks).toMatch(/^127\.0\.0\.1:\d+$/);
      const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', started.socks, `http://allowed.test:${origin.port}/`], { env: cleanEnv() });
      expect(stdout).toBe('hello');
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      // The decision log (stdout) carries the SOCKS5 record, written before exit.
      expect(out.split('\n').filter(Boolean).map((l) => JSON.parse(l))).toEqual(expect.arrayContaining([expect.objectContaining({ method: 'SOCKS5', host: 'allowed.test', verdict: 'allow' })]));
    } finally {
      child.kill('SIGKILL');
    }
    const bad = await run('node', [BIN, 'serve', '--no-store', '--allow', 'x.test', '--socks-listen', 'nonsense'], { env: cleanEnv() }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad?.code).toBe(2);
    expect(bad?.stderr.trim().split('\n')).toHaveLength(1);
  });
});
