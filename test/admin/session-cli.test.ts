import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';

// --viewer-token and --viewer-token-file through the real CLI (dist/).
const BIN = join(resolve(__dirname, '../..'), 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-viewer-cli-'));
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const base = (data: string) => ['serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--no-decision-log', '--no-alerts', '--log-format', 'json', '--data-dir', data, '--allow', 'example.com'];

function refused(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((r) =>
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, AGENT_EGRESS_ADMIN_TOKEN: '', ...env }, timeout: 20_000 }, (err, _o, stderr) =>
      r({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr: String(stderr) }),
    ),
  );
}

function serve(args: string[], env: Record<string, string> = {}): Promise<{ admin: string; stop(): void }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, AGENT_EGRESS_ADMIN_TOKEN: '', ...env } });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return new Promise((ok, fail) => {
    const t = setInterval(() => {
      const m = /"admin":"(127\.0\.0\.1:\d+)"/.exec(err);
      if (m && /listening/.test(err)) {
        clearInterval(t);
        ok({ admin: `http://${m[1]}`, stop: () => child.kill('SIGTERM') });
      }
    }, 20);
    child.once('exit', (code) => {
      clearInterval(t);
      fail(new Error(`serve exited ${code}: ${err}`));
    });
  });
}

describe('serve --viewer-token', { timeout: 120_000 }, () => {
  it('refuses a contradiction or an unsafe token file with one line and exit 2', async () => {
    const loose = join(dir, 'loose');
    writeFileSync(loose, 'viewer-token-0123456789\n');
    chmodSync(loose, 0o644);
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--viewer-token', 'short'], {}, /16-512 printable characters/],
      [['--viewer-token', 'viewer-token-0123456789', '--no-admin-auth'], {}, /needs the admin API to have a token/],
      [['--viewer-token', 'viewer-token-0123456789', '--viewer-token-file', loose], {}, /contradict/],
      [['--viewer-token-file', loose], {}, /viewer token file .* has mode 0644.*chmod 600/],
      [['--viewer-token-file', join(dir, 'missing')], {}, /does not exist/],
      [['--admin-token', 'same-token-0123456789'], { AGENT_EGRESS_VIEWER_TOKEN: 'same-token-0123456789' }, /must differ/],
    ];
    for (const [args, env, want] of cases) {
      const r = await refused([...base(join(dir, 'data-refused')), ...args], env);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(want);
    }
  });

  it('a viewer token from a 0600 file reads and cannot reload; the admin token still can', async () => {
    const file = join(dir, 'viewer');
    writeFileSync(file, 'viewer-token-from-a-file-0123\n', { mode: 0o600 });
    const s = await serve([...base(join(dir, 'data-ok')), '--admin-token', 'admin-token-0123456789abc', '--viewer-token-file', file]);
    try {
      const call = async (method: 'GET' | 'POST', p: string, token: string) => {
        const r = await request(s.admin + p, { method, headers: { authorization: `Bearer ${token}` } });
        await r.body.dump();
        return r.statusCode;
      };
      expect(await call('GET', '/api/policy', 'viewer-token-from-a-file-0123')).toBe(200);
      expect(await call('POST', '/api/policy/reload', 'viewer-token-from-a-file-0123')).toBe(403);
      expect(await call('POST', '/api/policy/reload', 'admin-token-0123456789abc')).toBe(200);
      expect(await call('GET', '/api/policy', 'wrong-token-0123456789')).toBe(401);
      // The dashboard's files are in the built package (dist/), served without a token.
      for (const p of ['/', '/ui/app.js', '/ui/live.js', '/ui/shared.js', '/ui/app.css']) {
        const r = await request(s.admin + p);
        const text = await r.body.text();
        expect(r.statusCode, p).toBe(200);
        expect(text.length, p).toBeGreaterThan(100);
      }
    } finally {
      s.stop();
    }
  });
});
