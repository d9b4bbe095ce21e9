import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PendingApproval } from '../../src/approvals/types.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { api, cli, curl, pendingFor } from './helpers.js';

const run = promisify(execFile);
let dns: TestDnsServer;
let origin: Origin;
const dir = mkdtempSync(join(tmpdir(), 'ae-dnsask-'));
const policyFile = join(dir, 'policy.yaml');

beforeAll(async () => {
  dns = await startTestDnsServer({ 'ask.test': { A: ['127.0.0.1'] }, 'slow.test': { A: ['127.0.0.1'] }, 'hook.test': { A: ['127.0.0.1'] } });
  origin = await startHttpOrigin();
  writeFileSync(policyFile, 'version: 1\non_no_match: ask\naddress_guard: { exempt: [127.0.0.1/32] }\nrules:\n  - name: ok\n    action: allow\n    hosts: [ok.test]\n');
});
afterAll(async () => {
  await origin?.close();
  await dns?.close();
});

async function dig(port: number, name: string): Promise<{ status: string; answers: string[] }> {
  const r = await run('dig', [`@127.0.0.1`, '-p', String(port), name, 'A', '+tries=1', '+time=8', '+noall', '+comments', '+answer']);
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? 'none';
  const answers = r.stdout.split('\n').filter((l) => l && !l.startsWith(';')).map((l) => l.trim().split(/\s+/).pop()!);
  return { status, answers };
}

describe('the DNS filter holds an ask, bounded', () => {
  let p: TestProxy;
  beforeAll(async () => {
    p = await startTestProxy({
      policyFile,
      dnsServers: [`127.0.0.1:${dns.port}`],
      store: { dataDir: dir },
      admin: { listen: '127.0.0.1:0' },
      dns: { listen: ['127.0.0.1:0'] },
      approvals: { dnsTimeoutMs: 400 },
    });
  });
  afterAll(async () => p?.close());

  it('a query nobody approves is answered as a deny after the DNS hold, without an upstream query', async () => {
    const before = dns.queries.filter((q) => q.name === 'slow.test').length;
    const r = await dig(p.egress.dns!.port, 'slow.test');
    expect(r.status).toBe('NXDOMAIN');
    expect(dns.queries.filter((q) => q.name === 'slow.test').length).toBe(before);
    const rec = await p.sink.waitFor((x) => x.host === 'slow.test' && x.method === 'DNS');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'approval_timeout', port: null });
    expect(rec.detail?.approval).toMatchObject({ outcome: 'timeout' });
  });

  it('an approved query is resolved and answered', async () => {
    const long = await startTestProxy({
      policyFile,
      dnsServers: [`127.0.0.1:${dns.port}`],
      store: { dataDir: mkdtempSync(join(tmpdir(), 'ae-dnsask2-')) },
      admin: { listen: '127.0.0.1:0' },
      dns: { listen: ['127.0.0.1:0'] },
      approvals: { dnsTimeoutMs: 6000 },
    });
    try {
      const q = dig(long.egress.dns!.port, 'ask.test');
      const a = await pendingFor(long, 'ask.test', null);
      expect(a).toMatchObject({ method: 'DNS', agent: null, port: null });
      await api(long, `/api/approvals/${a.id}/approve`, { scope: 'once', by: 'dns-tester' });
      const r = await q;
      expect(r.status).toBe('NOERROR');
      expect(r.answers).toContain('127.0.0.1');
      const rec = await long.sink.waitFor((x) => x.host === 'ask.test' && x.method === 'DNS');
      expect(rec).toMatchObject({ verdict: 'allow', reason: 'approved' });
      expect(rec.detail?.approval).toMatchObject({ by: 'dns-tester', scope: 'once' });
    } finally {
      await long.close();
    }
  });
});

describe('--approval-webhook', () => {
  let hook: Server;
  const bodies: string[] = [];
  let fail = 1;
  beforeAll(async () => {
    hook = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        bodies.push(b);
        // The first delivery fails: the sender retries, as the alert webhook does.
        res.writeHead(fail-- > 0 ? 500 : 204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => new Promise<void>((r) => hook.close(() => r())));

  it('notifies a new pending approval with JSON carrying a Slack-compatible text, retrying a failure', async () => {
    const p = await startTestProxy({
      policyFile,
      dnsServers: [`127.0.0.1:${dns.port}`],
      store: { dataDir: mkdtempSync(join(tmpdir(), 'ae-hook-')) },
      admin: { listen: '127.0.0.1:0' },
      approvals: { webhook: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook` },
    });
    try {
      const c = curl(p.url, `http://hook.test:${origin.port}/`);
      const a = await pendingFor(p, 'hook.test', origin.port);
      // A second identical request joins the approval: no second notification.
      const c2 = curl(p.url, `http://hook.test:${origin.port}/`);
      await pendingFor(p, 'hook.test', origin.port, 2);
      const end = Date.now() + 10_000;
      while (bodies.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
      expect(bodies).toHaveLength(2);
      expect(bodies[0]).toBe(bodies[1]);
      const msg = JSON.parse(bodies[1]) as { type: string; text: string; approval: PendingApproval };
      expect(msg.type).toBe('approval_pending');
      expect(msg.text).toContain(`hook.test:${origin.port}`);
      expect(msg.text).toContain(a.id);
      expect(msg.approval).toMatchObject({ id: a.id, host: 'hook.test', port: origin.port });
      await api(p, `/api/approvals/${a.id}/deny`, {});
      expect((await c.done).status).toBe(403);
      expect((await c2.done).status).toBe(403);
      expect(bodies).toHaveLength(2);
    } finally {
      await p.close();
    }
  });
});

describe('check answers ask as the proxy would', () => {
  it('ASK and exit 3 for an ask; a grant in the grants file is an allow naming the grant', async () => {
    const d = mkdtempSync(join(tmpdir(), 'ae-check-'));
    const r = await cli(['check', 'new.test', '--policy', policyFile, '--data-dir', d]);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^ASK new\.test:443/);
    expect(r.stdout).toContain('approval_required');
    const j = await cli(['check', 'http://new.test/', '--policy', policyFile, '--data-dir', d, '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ verdict: 'ask', reason: 'approval_required' });
    writeFileSync(join(d, 'grants.yaml'), 'version: 1\nrules:\n  - name: grant:g_1\n    action: allow\n    hosts: [new.test]\n    ports: [443]\n');
    const g = await cli(['check', 'new.test', '--policy', policyFile, '--data-dir', d]);
    expect(g.code).toBe(0);
    expect(g.stdout).toContain('grant:g_1');
    writeFileSync(join(d, 'grants.yaml'), 'version: 1\nrules:\n  - name: grant:g_1\n    action: deny\n    hosts: [new.test]\n');
    const bad = await cli(['check', 'new.test', '--policy', policyFile, '--data-dir', d]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${join(d, 'grants.yaml')}:3`);
  }, 120_000);

  it('with --resolve, a name that resolves to a private address is denied, never ASK', async () => {
    const meta = join(dir, 'meta.yaml');
    writeFileSync(meta, 'version: 1\non_no_match: ask\n');
    const r = await cli(['check', '169.254.169.254:80', '--policy', meta, '--resolve', '--data-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('private_address');
    const ok = await cli(['check', '1.1.1.1:80', '--policy', meta, '--resolve', '--data-dir', dir]);
    expect(ok.code).toBe(3);
    expect(ok.stdout).toMatch(/^ASK/);
  }, 120_000);
});

describe('serve flags', () => {
  it('a bad approvals flag is one line and exit 2; a bad grants file stops serve with file and line', async () => {
    for (const args of [
      ['--approval-timeout', 'soon'],
      ['--max-pending-approvals', '0'],
      ['--approval-webhook', 'ftp://x'],
    ]) {
      const r = await cli(['serve', '--policy', policyFile, '--listen', '127.0.0.1:0', '--no-admin', ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    const d = mkdtempSync(join(tmpdir(), 'ae-serve-grants-'));
    const grants = join(d, 'g.yaml');
    writeFileSync(grants, 'version: 1\nrules:\n  - name: grant:x\n    action: allow\n    hosts: ["bad host"]\n');
    const r = await cli(['serve', '--policy', policyFile, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', d, '--grants-file', grants]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${grants}:5`);
    const help = await cli(['serve', '--help']);
    for (const f of ['--approval-timeout', '--approval-dns-timeout', '--max-pending-approvals', '--max-pending-approvals-per-agent', '--grants-file', '--approval-webhook']) expect(help.stdout).toContain(f);
  }, 120_000);
});

describe('SOCKS5 holds an ask like CONNECT', () => {
  it('the SOCKS5 request waits, is approved and completes; another is denied', async () => {
    const p = await startTestProxy({
      policyFile,
      dnsServers: [`127.0.0.1:${dns.port}`],
      store: { dataDir: mkdtempSync(join(tmpdir(), 'ae-socks-ask-')) },
      admin: { listen: '127.0.0.1:0' },
      socks: { listen: '127.0.0.1:0' },
    });
    try {
      const socks = `127.0.0.1:${p.egress.socks!.address.port}`;
      const env = { PATH: process.env.PATH ?? '' };
      const ok = run('curl', ['-sS', '--max-time', '25', '--socks5-hostname', socks, '-w', '\n%{http_code}', `http://ask.test:${origin.port}/`], { env });
      const a = await pendingFor(p, 'ask.test', origin.port);
      expect(a.method).toBe('CONNECT');
      await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once', by: 'socks-tester' });
      expect((await ok).stdout.trim().split('\n').pop()).toBe('200');
      const rec = await p.sink.waitFor((x) => x.host === 'ask.test' && x.reason === 'approved');
      expect(rec.detail?.approval).toMatchObject({ by: 'socks-tester' });
      const no = run('curl', ['-sS', '--max-time', '25', '--socks5-hostname', socks, `http://hook.test:${origin.port}/`], { env }).then(
        () => 0,
        (e: { code: number }) => e.code,
      );
      const b = await pendingFor(p, 'hook.test', origin.port);
      await api(p, `/api/approvals/${b.id}/deny`, {});
      // curl: 97 = the SOCKS proxy refused the connection.
      expect(await no).toBe(97);
      expect(await p.sink.waitFor((x) => x.host === 'hook.test' && x.reason === 'approval_denied')).toMatchObject({ verdict: 'deny' });
    } finally {
      await p.close();
    }
  }, 120_000);
});
