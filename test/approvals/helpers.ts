import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import type { PendingApproval } from '../../src/approvals/types.js';
import type { TestProxy } from '../helpers/proxy.js';

export { cli } from '../helpers/cli.js';
export const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export interface CurlResult {
  code: number | null;
  /** Response headers and body as curl wrote them (-i / -D -). */
  out: string;
  /** The final HTTP status (for CONNECT: the proxy's answer when the tunnel was refused). */
  status: number;
  connect: number;
}

/** curl through the proxy: a real client that blocks while the proxy holds its request. */
export function curl(proxy: string, url: string, opts: { user?: string; tunnel?: boolean } = {}): { done: Promise<CurlResult>; kill(): void; finished(): boolean } {
  const args = ['-s', '-D', '-', '-o', '-', '--max-time', '25', '-x', proxy, '-w', '\n%{http_code} %{http_connect}'];
  if (opts.user) args.push('--proxy-user', opts.user);
  if (opts.tunnel) args.push('-p');
  args.push(url);
  const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let over = false;
  child.stdout.on('data', (d) => (out += d));
  const done = new Promise<CurlResult>((r) =>
    child.once('close', (code) => {
      over = true;
      const last = out.trimEnd().split('\n').pop() ?? '';
      const [s, c] = last.split(' ').map(Number);
      r({ code, out, status: s, connect: c });
    }),
  );
  return { done, kill: () => child.kill('SIGKILL'), finished: () => over };
}

export async function api<T = unknown>(p: TestProxy, path: string, body?: unknown, token = p.admin!.token): Promise<{ status: number; json: T }> {
  const res = await request(`${p.admin!.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: (text ? JSON.parse(text) : null) as T };
}

/** Poll the queue until an approval for host:port shows `waiting` held requests. */
export async function pendingFor(p: TestProxy, host: string, port: number | null, waiting = 1, agent?: string | null, ms = 10_000): Promise<PendingApproval> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api<{ pending: PendingApproval[] }>(p, '/api/approvals');
    const hit = r.json.pending.find((a) => a.host === host && a.port === port && a.waiting >= waiting && (agent === undefined || a.agent === agent));
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no pending approval for ${host}:${port} with ${waiting} waiting; have ${JSON.stringify(r.json.pending)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function adminArgs(p: TestProxy): string[] {
  return ['--url', p.admin!.url, '--token', p.admin!.token!];
}
