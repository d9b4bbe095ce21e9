import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../helpers/raw.js';
import { startTestProxy } from '../helpers/proxy.js';

// The admin API's token on every address (issue 16), through the real CLI: serve as one user, the
// CLI as that user and as `nobody`, real HTTP.
const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');
const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ae-admin-token-'));
chmodSync(dir, 0o755);
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Serve {
  child: ChildProcess;
  admin: string;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

const AS_NOBODY = ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups'];

function serve(args: string[], env: Record<string, string> = {}, asNobody = false): Promise<Serve> {
  const argv = [asNobody ? nobodyCli() : BIN, 'serve'];
  const [cmd, pre] = asNobody ? ['setpriv', [...AS_NOBODY, process.execPath]] : [process.execPath, []];
  const child = spawn(cmd, [...pre, ...argv, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--no-decision-log', '--no-alerts', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    cwd: asNobody ? '/' : undefined,
    env: { ...process.env, AGENT_EGRESS_ADMIN_TOKEN: '', ...env },
  });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => (children.delete(child), r(code))));
  return new Promise((resolveStart, reject) => {
    const t = setInterval(() => {
      const m = /"admin":"(127\.0\.0\.1:\d+)"/.exec(err);
      if (m && /listening/.test(err)) {
        clearInterval(t);
        resolveStart({ child, admin: `http://${m[1]}`, stderr: () => err, stop: () => (child.kill('SIGTERM'), exited) });
      }
    }, 20);
    void exited.then((code) => {
      clearInterval(t);
      reject(Object.assign(new Error(`serve exited ${code}: ${err}`), { code, stderr: err }));
    });
  });
}

/** serve that must refuse to start: its exit code and stderr. */
async function serveFails(args: string[]): Promise<{ code: number | null; stderr: string }> {
  try {
    const s = await serve(args);
    await s.stop();
    throw new Error('serve started');
  } catch (err) {
    const e = err as { code?: number | null; stderr?: string };
    if (e.stderr === undefined) throw err;
    return { code: e.code ?? null, stderr: e.stderr };
  }
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; headers: Record<string, unknown> }> {
  const r = await request(url, { headers });
  return { status: r.statusCode, text: await r.body.text(), headers: r.headers };
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('admin API token (serve without --admin-token)', () => {
  const data = join(dir, 'data');

  it('generates a 0600 token in the data dir, requires it on loopback, reuses it after a restart; probes and /metrics stay open', async () => {
    const s = await serve(['--data-dir', data, '--allow', 'example.com']);
    let token: string;
    try {
      const file = join(data, 'admin-token');
      const st = statSync(file);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.uid).toBe(process.geteuid!());
      token = readFileSync(file, 'utf8').trim();
      expect(token.length).toBeGreaterThanOrEqual(32);
      expect(s.stderr()).not.toContain(token);
      expect(s.stderr()).toContain(file);

      const open = await get(`${s.admin}/api/decisions`);
      expect(open.status).toBe(401);
      expect(open.headers['www-authenticate']).toMatch(/^Bearer/);
      expect((await get(`${s.admin}/api/policy`)).status).toBe(401);
      expect((await get(`${s.admin}/api/decisions`, bearer('wrong-token-wrong-token'))).status).toBe(401);
      const reload = await request(`${s.admin}/api/policy/reload`, { method: 'POST' });
      await reload.body.dump();
      expect(reload.statusCode).toBe(401);
      expect((await get(`${s.admin}/api/decisions`, bearer(token))).status).toBe(200);
      for (const p of ['/healthz', '/readyz', '/metrics']) expect((await get(`${s.admin}${p}`)).status, p).toBe(200);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    const again = await serve(['--data-dir', data, '--allow', 'example.com']);
    try {
      expect(readFileSync(join(data, 'admin-token'), 'utf8').trim()).toBe(token);
      expect((await get(`${again.admin}/api/decisions`, bearer(token))).status).toBe(200);
      expect((await get(`${again.admin}/api/decisions`)).status).toBe(401);
    } finally {
      await again.stop();
    }
  });

  it('log query --url: the proxy user needs no token; nobody cannot read it and gets 401; an explicit --token wins', async () => {
    const s = await serve(['--data-dir', data, '--allow', 'example.com']);
    try {
      chmodSync(data, 0o700);
      const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(s.stderr())![1]);
      expect(await rawExchange(port, 'CONNECT tokened.test:443 HTTP/1.1\r\nHost: tokened.test:443\r\n\r\n')).toMatch(/^HTTP\/1\.1 403 /);
      let hosts: string[] = [];
      // The store commits in batches: ask again until the record is there (bounded).
      for (let i = 0; i < 50 && !hosts.includes('tokened.test'); i++) {
        const mine = await run(process.execPath, [BIN, 'log', 'query', '--url', s.admin, '--data-dir', data, '--json'], { encoding: 'utf8' });
        expect(mine.stderr).toBe('');
        hosts = mine.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).host);
        if (!hosts.includes('tokened.test')) await new Promise((r) => setTimeout(r, 100));
      }
      expect(hosts).toContain('tokened.test');
      // Same default as serve: AGENT_EGRESS_DATA_DIR.
      const viaEnv = await run(process.execPath, [BIN, 'log', 'summary', '--url', s.admin, '--json'], { encoding: 'utf8', env: { ...process.env, AGENT_EGRESS_DATA_DIR: data }, cwd: dir });
      expect(JSON.parse(viaEnv.stdout)).toHaveProperty('sinceMs');
      const wrong = await run(process.execPath, [BIN, 'log', 'query', '--url', s.admin, '--data-dir', data, '--token', 'not-the-admin-token'], { encoding: 'utf8' }).catch((e) => e);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/401/);

      const cli = nobodyCli();
      const theirs = await run('setpriv', ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', process.execPath, cli, 'log', 'query', '--url', s.admin, '--data-dir', data], {
        encoding: 'utf8',
        cwd: '/',
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      }).catch((e) => e);
      expect(theirs.code).toBe(1);
      expect(theirs.stderr).toMatch(/admin API 401/);
    } finally {
      chmodSync(data, 0o755);
      await s.stop();
    }
  });

  it('root (sudo) reads the token of a proxy running as its own service user', async () => {
    const d = join(dir, 'service-user');
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, 65534, 65534);
    const s = await serve(['--data-dir', d], {}, true);
    try {
      const st = statSync(join(d, 'admin-token'));
      expect([st.uid, st.mode & 0o777]).toEqual([65534, 0o600]);
      const q = await run(process.execPath, [BIN, 'log', 'query', '--url', s.admin, '--data-dir', d, '--json'], { encoding: 'utf8' });
      expect(q.stderr).toBe('');
    } finally {
      await s.stop();
    }
  });

  it('an agent credential (a valid proxy token from the policy) is never an admin credential', async () => {
    const agentToken = 'agent-proxy-token-0123456789';
    const policy = join(dir, 'agents.yaml');
    writeFileSync(
      policy,
      `version: 1\nrequire_auth: true\nagents:\n  - name: bot\n    token_sha256: "${createHash('sha256').update(agentToken).digest('hex')}"\nrules:\n  - name: ex\n    action: allow\n    hosts: [example.com]\n`,
    );
    const s = await serve(['--data-dir', join(dir, 'agents-data'), '--policy', policy]);
    try {
      const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(s.stderr())![1]);
      const basic = `Basic ${Buffer.from(`bot:${agentToken}`).toString('base64')}`;
      // The proxy accepts the credential (a deny by rule, not 407)...
      expect(await rawExchange(port, `CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\nProxy-Authorization: ${basic}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 /);
      // ...and the admin API refuses it in every shape.
      for (const h of [bearer(agentToken), { authorization: basic }, { 'proxy-authorization': basic }]) {
        expect((await get(`${s.admin}/api/decisions`, h)).status).toBe(401);
      }
    } finally {
      await s.stop();
    }
  });

  it('refuses a token file other users may read, or that another user owns, or a symlink: one line, exit 2', async () => {
    const d = join(dir, 'unsafe');
    mkdirSync(d, { recursive: true });
    const file = join(d, 'admin-token');
    writeFileSync(file, 'a-token-that-is-long-enough-0123\n', { mode: 0o600 });
    for (const mode of [0o640, 0o604, 0o644]) {
      chmodSync(file, mode);
      const r = await serveFails(['--data-dir', d]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`has mode 0${mode.toString(8)}`);
    }
    chmodSync(file, 0o600);
    chownSync(file, 65534, 65534);
    const owned = await serveFails(['--data-dir', d]);
    expect(owned.code).toBe(2);
    expect(owned.stderr).toMatch(/owned by uid 65534/);
    unlinkSync(file);
    const real = join(dir, 'elsewhere-token');
    writeFileSync(real, 'a-token-that-is-long-enough-0123\n', { mode: 0o600 });
    symlinkSync(real, file);
    const link = await serveFails(['--data-dir', d]);
    expect(link.code).toBe(2);
    expect(link.stderr).toMatch(/symlink/);
  });

  it('--no-admin-auth warns loudly and serves without a token (and writes none)', async () => {
    const d = join(dir, 'open');
    const s = await serve(['--data-dir', d, '--no-admin-auth']);
    try {
      expect(s.stderr()).toMatch(/ADMIN API WITHOUT AUTHENTICATION/);
      expect((await get(`${s.admin}/api/decisions`)).status).toBe(200);
      expect(existsSync(join(d, 'admin-token'))).toBe(false);
    } finally {
      await s.stop();
    }
    const both = await run(process.execPath, [BIN, 'serve', '--no-admin-auth', '--admin-token', 'x'.repeat(20), '--data-dir', d]).catch((e) => e);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/contradict/);
  });

  it('--metrics-auth: /metrics needs the token, /healthz and /readyz do not', async () => {
    const d = join(dir, 'metrics');
    const s = await serve(['--data-dir', d, '--metrics-auth']);
    try {
      const token = readFileSync(join(d, 'admin-token'), 'utf8').trim();
      expect((await get(`${s.admin}/metrics`)).status).toBe(401);
      expect((await get(`${s.admin}/metrics`, bearer(token))).status).toBe(200);
      expect((await get(`${s.admin}/healthz`)).status).toBe(200);
      expect((await get(`${s.admin}/readyz`)).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  it('--workers: the primary generates the token once and its admin API requires it', async () => {
    const d = join(dir, 'workers');
    const s = await serve(['--data-dir', d, '--workers', '2']);
    try {
      const token = readFileSync(join(d, 'admin-token'), 'utf8').trim();
      expect(statSync(join(d, 'admin-token')).mode & 0o777).toBe(0o600);
      expect((await get(`${s.admin}/api/decisions`)).status).toBe(401);
      expect((await get(`${s.admin}/api/decisions`, bearer(token))).status).toBe(200);
      expect((await get(`${s.admin}/readyz`)).status).toBe(200);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });
});

/**
 * The CLI as `nobody` can run it: the repository itself, or (when it sits in a directory nobody
 * cannot enter) a world-readable copy of what the CLI needs.
 */
let nobodyBin: string | null = null;
function nobodyCli(): string {
  if (nobodyBin) return nobodyBin;
  const probe = spawnSyncOk(BIN);
  if (probe) return (nobodyBin = BIN);
  const copy = mkdtempSync(join(tmpdir(), 'ae-nobody-cli-'));
  chmodSync(copy, 0o755);
  for (const p of ['bin', 'dist', 'node_modules', 'package.json']) cpSync(join(ROOT, p), join(copy, p), { recursive: true });
  return (nobodyBin = join(copy, 'bin/agent-egress.js'));
}

function spawnSyncOk(bin: string): boolean {
  try {
    execFileSync('setpriv', ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', process.execPath, bin, '--version'], { stdio: 'ignore', cwd: '/' });
    return true;
  } catch {
    return false;
  }
}

describe('admin API token (in-process runtime)', () => {
  it('startEgress generates the token too, and the test helper hands it over', async () => {
    const d = join(dir, 'in-process');
    const p = await startTestProxy({ store: { dataDir: d }, admin: { listen: '127.0.0.1:0' } });
    try {
      const a = p.admin!;
      expect(a.token).toBe(readFileSync(join(d, 'admin-token'), 'utf8').trim());
      expect((await get(`${a.url}/api/policy`)).status).toBe(401);
      expect((await get(`${a.url}/api/policy`, bearer(a.token!))).status).toBe(200);
    } finally {
      await p.close();
    }
  });
});
