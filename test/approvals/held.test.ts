import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/decisions/record.js';
import type { Grant, PendingApproval } from '../../src/approvals/types.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { adminArgs, api, cli, curl, pendingFor, sha } from './helpers.js';

let dns: TestDnsServer;
let origin: Origin;
const NAMES = ['ask.test', 'deny.test', 'tunnel.test', 'shared.test', 'always.test', 'temp.test', 'gone.test', 'one.test', 'two.test', 'rep.test'];

beforeAll(async () => {
  const table: Record<string, { A: string[] }> = { 'meta.test': { A: ['169.254.169.254'] }, 'loop.test': { A: ['127.0.0.2'] } };
  for (const n of NAMES) table[n] = { A: ['127.0.0.1'] };
  dns = await startTestDnsServer(table);
  origin = await startHttpOrigin();
});
afterAll(async () => {
  await origin?.close();
  await dns?.close();
});

function policy(dir: string, extra = ''): string {
  const f = join(dir, 'policy.yaml');
  writeFileSync(
    f,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
rules:
  - name: nope
    action: deny
    hosts: [never.test]
agents:
  - name: bot
    token_sha256: "${sha('pw')}"
    on_no_match: ask
  - name: other
    token_sha256: "${sha('pw2')}"
    on_no_match: ask
${extra}`,
  );
  return f;
}

async function start(dir: string, approvals: Record<string, unknown> = {}): Promise<TestProxy> {
  return startTestProxy({
    policyFile: policy(dir),
    dnsServers: [`127.0.0.1:${dns.port}`],
    store: { dataDir: dir },
    admin: { listen: '127.0.0.1:0' },
    approvals,
  });
}

const recordOf = (p: TestProxy, host: string, pred: (r: DecisionRecord) => boolean = () => true) => p.sink.waitFor((r) => r.host === host && pred(r));

describe('held requests, decided through the CLI and the API', () => {
  let p: TestProxy;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ae-held-'));
    p = await start(dir);
  });
  afterAll(async () => p?.close());

  it('plain HTTP: the request waits, is approved once through the CLI and completes with 200', async () => {
    const c = curl(p.url, `http://ask.test:${origin.port}/echo`, { user: 'bot:pw' });
    const a = await pendingFor(p, 'ask.test', origin.port);
    expect(c.finished()).toBe(false);
    expect(a).toMatchObject({ agent: 'bot', method: 'GET', waiting: 1, reason: 'no rule matched (on_no_match: ask)' });
    expect(Date.parse(a.createdAt)).not.toBeNaN();
    const list = await cli(['approvals', 'list', ...adminArgs(p)]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(a.id);
    expect(list.stdout).toContain(`ask.test:${origin.port}`);
    const r = await cli(['approvals', 'approve', a.id, '--by', 'tester', ...adminArgs(p)]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const res = await c.done;
    expect(res.status).toBe(200);
    expect(res.out).toContain('"url":"/echo"');
    const rec = await recordOf(p, 'ask.test');
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'approved', agent: 'bot', status: 200 });
    expect(rec.detail?.approval).toMatchObject({ id: a.id, outcome: 'approved', by: 'tester', scope: 'once' });
    // Once means once: the next request asks again.
    const again = curl(p.url, `http://ask.test:${origin.port}/`, { user: 'bot:pw' });
    const b = await pendingFor(p, 'ask.test', origin.port);
    expect(b.id).not.toBe(a.id);
    expect((await api(p, `/api/approvals/${b.id}/deny`, { by: 'tester' })).status).toBe(200);
    expect((await again.done).status).toBe(403);
  });

  it('a denied request gets 403 with Proxy-Status and is recorded as approval_denied with who decided', async () => {
    const c = curl(p.url, `http://deny.test:${origin.port}/`, { user: 'bot:pw' });
    const a = await pendingFor(p, 'deny.test', origin.port);
    const r = await cli(['approvals', 'deny', a.id, '--by', 'carol', ...adminArgs(p)]);
    expect(r.code).toBe(0);
    const res = await c.done;
    expect(res.status).toBe(403);
    expect(res.out).toMatch(/proxy-status: agent-egress; error=http_request_denied; details="[^"]*reason approval_denied/i);
    const rec = await recordOf(p, 'deny.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'approval_denied', status: 403 });
    expect(rec.detail?.approval).toMatchObject({ id: a.id, outcome: 'denied', by: 'carol' });
    // Decided: a second decision is 409, an unknown id 404.
    expect((await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once' })).status).toBe(409);
    expect((await api(p, `/api/approvals/ap_nope/deny`, {})).status).toBe(404);
    const again = await cli(['approvals', 'approve', a.id, ...adminArgs(p)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('409');
  });

  it('CONNECT: the tunnel gets no answer until approved, then 200 and the request inside completes', async () => {
    const c = curl(p.url, `http://tunnel.test:${origin.port}/echo`, { user: 'bot:pw', tunnel: true });
    const a = await pendingFor(p, 'tunnel.test', origin.port);
    expect(a.method).toBe('CONNECT');
    // Held: the proxy has not answered the CONNECT, so curl is still waiting.
    expect(c.finished()).toBe(false);
    expect((await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once', by: 'api-user' })).json).toEqual({ ok: true });
    const res = await c.done;
    expect(res.connect).toBe(200);
    expect(res.status).toBe(200);
    const rec = await recordOf(p, 'tunnel.test', (r) => r.method === 'CONNECT');
    expect(rec).toMatchObject({ verdict: 'allow', reason: 'approved' });
    expect(rec.detail?.approval).toMatchObject({ by: 'api-user', scope: 'once' });
  });

  it('CONNECT denied: 403 to the CONNECT', async () => {
    const c = curl(p.url, `http://tunnel.test:${origin.port}/`, { user: 'other:pw2', tunnel: true });
    const a = await pendingFor(p, 'tunnel.test', origin.port, 1, 'other');
    await api(p, `/api/approvals/${a.id}/deny`, {});
    const res = await c.done;
    expect(res.connect).toBe(403);
    expect(res.out).toMatch(/proxy-status: agent-egress; error=http_request_denied/i);
  });

  it('identical pending requests share one approval; one decision releases them all', async () => {
    const c1 = curl(p.url, `http://shared.test:${origin.port}/`, { user: 'bot:pw' });
    const c2 = curl(p.url, `http://shared.test:${origin.port}/echo`, { user: 'bot:pw', tunnel: true });
    const a = await pendingFor(p, 'shared.test', origin.port, 2);
    // Another agent to the same place is another approval.
    const c3 = curl(p.url, `http://shared.test:${origin.port}/`, { user: 'other:pw2' });
    const b = await pendingFor(p, 'shared.test', origin.port, 1, 'other');
    const all = (await api<{ pending: PendingApproval[] }>(p, '/api/approvals')).json.pending.filter((x) => x.host === 'shared.test');
    expect(all).toHaveLength(2);
    expect(all.find((x) => x.agent === 'bot')).toMatchObject({ id: a.id, waiting: 2 });
    expect(all.find((x) => x.agent === 'other')).toBeDefined();
    await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once' });
    expect((await c1.done).status).toBe(200);
    expect((await c2.done).status).toBe(200);
    expect(all.find((x) => x.agent === 'other')!.id).toBe(b.id);
    await api(p, `/api/approvals/${b.id}/deny`, {});
    expect((await c3.done).status).toBe(403);
  });

  it('a client that goes away stops waiting: its approval leaves the queue', async () => {
    const c = curl(p.url, `http://gone.test:${origin.port}/`, { user: 'bot:pw' });
    const a = await pendingFor(p, 'gone.test', origin.port);
    c.kill();
    await c.done;
    const end = Date.now() + 5000;
    let left: PendingApproval[] = [];
    do {
      left = (await api<{ pending: PendingApproval[] }>(p, '/api/approvals')).json.pending.filter((x) => x.id === a.id);
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    } while (Date.now() < end);
    expect(left).toEqual([]);
    const rec = await recordOf(p, 'gone.test');
    expect(rec).toMatchObject({ verdict: 'deny', reason: 'approval_timeout' });
    expect(rec.detail?.approval).toMatchObject({ outcome: 'abandoned' });
  });

  it('a private or metadata address is never asked about: denied as always, no approval created', async () => {
    for (const [url, host, range] of [
      [`http://meta.test:${origin.port}/`, 'meta.test', 'metadata'],
      [`http://loop.test:${origin.port}/`, 'loop.test', 'loopback'],
      [`http://169.254.169.254:${origin.port}/`, '169.254.169.254', 'metadata'],
    ]) {
      for (const tunnel of [false, true]) {
        const res = await curl(p.url, url, { user: 'bot:pw', tunnel }).done;
        expect(tunnel ? res.connect : res.status, url).toBe(403);
        const rec = await recordOf(p, host, (r) => r.method === (tunnel ? 'CONNECT' : 'GET'));
        expect(rec.reason).toBe('private_address');
        expect((rec.detail?.refusedAddresses as { why: string }[])[0].why).toContain(range);
        expect(rec.detail?.approval).toBeUndefined();
      }
    }
    const pending = (await api<{ pending: PendingApproval[] }>(p, '/api/approvals')).json.pending;
    expect(pending.filter((x) => ['meta.test', 'loop.test', '169.254.169.254'].includes(x.host))).toEqual([]);
  });

  it('a deny rule is never asked about', async () => {
    const res = await curl(p.url, `http://never.test:${origin.port}/`, { user: 'bot:pw' }).done;
    expect(res.status).toBe(403);
    expect((await recordOf(p, 'never.test')).reason).toBe('rule_deny');
  });

  it('approving needs the admin token; bad bodies are 400', async () => {
    const c = curl(p.url, `http://one.test:${origin.port}/`, { user: 'bot:pw' });
    const a = await pendingFor(p, 'one.test', origin.port);
    expect((await api(p, '/api/approvals', undefined, 'wrong-token-wrong-token')).status).toBe(401);
    expect((await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once' }, null)).status).toBe(401);
    expect((await api(p, `/api/approvals/${a.id}/deny`, {}, 'wrong-token-wrong-token')).status).toBe(401);
    expect((await api(p, '/api/grants/g_x/revoke', {}, null)).status).toBe(401);
    const cliNoToken = await cli(['approvals', 'approve', a.id, '--url', p.admin!.url, '--token', 'wrong-token-wrong-token']);
    expect(cliNoToken.code).toBe(1);
    expect(cliNoToken.stderr).toContain('401');
    for (const body of [{}, { scope: 'sometimes' }, { scope: 'once', extra: 1 }, { scope: 'agent', for: 'soon' }, { scope: 'once', always: true }, { scope: 'agent', for: '1h', always: true }]) {
      const r = await api<{ message: string }>(p, `/api/approvals/${a.id}/approve`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.message.length).toBeGreaterThan(0);
    }
    // Still pending after the refusals: nothing was decided by a bad request.
    expect((await pendingFor(p, 'one.test', origin.port)).id).toBe(a.id);
    // deny needs nothing in its body: a POST without one (bearer token, no content type) is {}.
    const { request } = await import('undici');
    const bare = await request(`${p.admin!.url}/api/approvals/${a.id}/deny`, { method: 'POST', headers: { authorization: `Bearer ${p.admin!.token}` } });
    expect(bare.statusCode).toBe(200);
    expect(await bare.body.json()).toEqual({ ok: true });
    expect((await c.done).status).toBe(403);
  });

  it('CLI usage errors are one line and exit 2', async () => {
    for (const args of [
      ['approvals', 'approve', 'ap_x', '--scope', 'sometimes'],
      ['approvals', 'approve', 'ap_x', '--for', 'soon', '--scope', 'agent'],
      ['approvals', 'approve', 'ap_x', '--for', '1h'],
      ['approvals', 'approve', 'ap_x', '--scope', 'agent', '--for', '1h', '--always'],
      ['approvals', 'deny', 'bad id\x1b[2J'],
      ['approvals', 'nonsense'],
    ]) {
      const r = await cli([...args, ...adminArgs(p)]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).not.toContain('\x1b');
    }
  }, 120_000);

  it('the SSE stream carries approval events: pending, then resolved', async () => {
    const ac = new AbortController();
    const { request } = await import('undici');
    const res = await request(`${p.admin!.url}/api/decisions/stream`, { headers: { authorization: `Bearer ${p.admin!.token}` }, signal: ac.signal, bodyTimeout: 0 });
    let buf = '';
    const events: { type: string; approval: PendingApproval & { outcome?: string; by?: string } }[] = [];
    const reading = (async () => {
      try {
        for await (const chunk of res.body) {
          buf += chunk.toString();
          let end: number;
          while ((end = buf.indexOf('\n\n')) !== -1) {
            const ev = buf.slice(0, end);
            buf = buf.slice(end + 2);
            if (ev.includes('event: approval')) events.push(JSON.parse(ev.split('\n').find((l) => l.startsWith('data: '))!.slice(6)));
          }
        }
      } catch {
        /* aborted */
      }
    })();
    const c = curl(p.url, `http://two.test:${origin.port}/`, { user: 'bot:pw' });
    const a = await pendingFor(p, 'two.test', origin.port);
    await api(p, `/api/approvals/${a.id}/deny`, { by: 'sse' });
    await c.done;
    const end = Date.now() + 5000;
    while (!events.some((e) => e.type === 'resolved' && e.approval.id === a.id) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await reading;
    const mine = events.filter((e) => e.approval.id === a.id);
    expect(mine[0]).toMatchObject({ type: 'pending', approval: { host: 'two.test', agent: 'bot', waiting: 1 } });
    expect(mine[mine.length - 1]).toMatchObject({ type: 'resolved', approval: { outcome: 'denied', by: 'sse' } });
  });
});

describe('grants', () => {
  it('"always" lets the next request through without asking, names the grant, survives a restart, and is revocable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-always-'));
    let p = await start(dir);
    try {
      const c = curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' });
      const a = await pendingFor(p, 'always.test', origin.port);
      const r = await cli(['approvals', 'approve', a.id, '--scope', 'agent', '--always', '--by', 'dana', '--json', ...adminArgs(p)]);
      expect(r.code).toBe(0);
      const grant = (JSON.parse(r.stdout) as { grant: Grant }).grant;
      expect(grant).toMatchObject({ agent: 'bot', host: 'always.test', port: origin.port, always: true, expiresAt: null, by: 'dana' });
      expect((await c.done).status).toBe(200);
      const file = join(dir, 'grants.yaml');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, 'utf8')).toContain(`grant:${grant.id}`);
      const next = await curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' }).done;
      expect(next.status).toBe(200);
      const rec = await recordOf(p, 'always.test', (x) => x.reason === 'rule_allow');
      expect(rec.rule).toBe(`grant:${grant.id}`);
      // Per agent: another agent is still asked.
      const o = curl(p.url, `http://always.test:${origin.port}/`, { user: 'other:pw2' });
      const b = await pendingFor(p, 'always.test', origin.port, 1, 'other');
      await api(p, `/api/approvals/${b.id}/deny`, {});
      expect((await o.done).status).toBe(403);

      await p.close();
      p = await start(dir);
      const after = await curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' }).done;
      expect(after.status).toBe(200);
      expect((await recordOf(p, 'always.test')).rule).toBe(`grant:${grant.id}`);
      const listed = await cli(['approvals', 'grants', ...adminArgs(p)]);
      expect(listed.stdout).toContain(grant.id);
      expect(listed.stdout).toContain('dana');

      const rv = await cli(['approvals', 'revoke', grant.id, ...adminArgs(p)]);
      expect(rv.code).toBe(0);
      expect(readFileSync(file, 'utf8')).not.toContain(grant.id);
      expect((await api<{ grants: Grant[] }>(p, '/api/grants')).json.grants).toEqual([]);
      const asked = curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' });
      const c2 = await pendingFor(p, 'always.test', origin.port);
      await api(p, `/api/approvals/${c2.id}/deny`, {});
      expect((await asked.done).status).toBe(403);
      expect((await api(p, `/api/grants/${grant.id}/revoke`, {})).status).toBe(404);
    } finally {
      await p.close();
    }
  }, 120_000);

  it('a temporary grant for everyone lets others through, then expires and asks again; it is not kept across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-temp-'));
    const p = await start(dir);
    try {
      const c = curl(p.url, `http://temp.test:${origin.port}/`, { user: 'bot:pw' });
      const a = await pendingFor(p, 'temp.test', origin.port);
      const r = await api<{ ok: boolean; grant: Grant }>(p, `/api/approvals/${a.id}/approve`, { scope: 'everyone', for: '2s', by: 'eve' });
      expect(r.json.grant).toMatchObject({ agent: null, always: false, by: 'eve' });
      expect(Date.parse(r.json.grant.expiresAt!)).toBeGreaterThan(Date.now());
      expect((await c.done).status).toBe(200);
      const other = await curl(p.url, `http://temp.test:${origin.port}/`, { user: 'other:pw2' }).done;
      expect(other.status).toBe(200);
      expect((await recordOf(p, 'temp.test', (x) => x.agent === 'other')).rule).toBe(`grant:${r.json.grant.id}`);
      // After expiry: asked again.
      await new Promise((res) => setTimeout(res, Date.parse(r.json.grant.expiresAt!) - Date.now() + 200));
      expect((await api<{ grants: Grant[] }>(p, '/api/grants')).json.grants).toEqual([]);
      const again = curl(p.url, `http://temp.test:${origin.port}/`, { user: 'bot:pw' });
      const b = await pendingFor(p, 'temp.test', origin.port);
      await api(p, `/api/approvals/${b.id}/deny`, {});
      expect((await again.done).status).toBe(403);
    } finally {
      await p.close();
    }
  });

  it('a bad edit of the grants file is refused with file and line: at start (no start) and at reload (grants in force kept)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-badgrants-'));
    const file = join(dir, 'grants.yaml');
    writeFileSync(file, 'version: 1\nrules:\n  - name: grant:x\n    action: allow\n    hosts: [always.test]\n    ports: [99999]\n');
    await expect(start(dir)).rejects.toThrow(`${file}:6`);
    writeFileSync(file, `version: 1\nrules:\n  - name: grant:ok\n    action: allow\n    hosts: [always.test]\n    ports: [${origin.port}]\n`);
    const p = await startTestProxy({ policyFile: policy(dir), dnsServers: [`127.0.0.1:${dns.port}`], store: { dataDir: dir }, admin: { listen: '127.0.0.1:0' }, watchMs: 50 });
    try {
      expect((await curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' }).done).status).toBe(200);
      writeFileSync(file, 'version: 1\nrules:\n  - name: grant:ok\n    action: deny\n    hosts: [always.test]\n');
      const end = Date.now() + 5000;
      let err: { message: string } | null = null;
      while (!err && Date.now() < end) {
        err = (await api<{ lastError: { message: string } | null }>(p, '/api/grants')).json.lastError;
        if (!err) await new Promise((r) => setTimeout(r, 25));
      }
      expect(err?.message).toContain(`${file}:3`);
      expect(err?.message).toContain('allow rules only');
      expect((await curl(p.url, `http://always.test:${origin.port}/`, { user: 'bot:pw' }).done).status).toBe(200);
    } finally {
      await p.close();
    }
  });
});

describe('timeouts, bounds and report mode', () => {
  it('a request nobody decides is denied after --approval-timeout, plain HTTP and CONNECT alike', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-timeout-'));
    const p = await start(dir, { timeoutMs: 300 });
    try {
      const [h, t] = await Promise.all([
        curl(p.url, `http://one.test:${origin.port}/`, { user: 'bot:pw' }).done,
        curl(p.url, `http://two.test:${origin.port}/`, { user: 'bot:pw', tunnel: true }).done,
      ]);
      expect(h.status).toBe(403);
      expect(h.out).toMatch(/proxy-status: agent-egress; error=http_request_denied; details="[^"]*approval_timeout/i);
      expect(t.connect).toBe(403);
      for (const host of ['one.test', 'two.test']) {
        const rec = await recordOf(p, host);
        expect(rec).toMatchObject({ verdict: 'deny', reason: 'approval_timeout', status: 403 });
        expect(rec.detail?.approval).toMatchObject({ outcome: 'timeout' });
      }
      expect((await api<{ pending: PendingApproval[] }>(p, '/api/approvals')).json.pending).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('past the per-agent bound a new ask is denied at once (fail closed); other agents still ask', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-bound-'));
    const p = await start(dir, { maxPerAgent: 1 });
    try {
      const first = curl(p.url, `http://one.test:${origin.port}/`, { user: 'bot:pw' });
      const a = await pendingFor(p, 'one.test', origin.port);
      const over = await curl(p.url, `http://two.test:${origin.port}/`, { user: 'bot:pw' }).done;
      expect(over.status).toBe(403);
      const rec = await recordOf(p, 'two.test');
      expect(rec).toMatchObject({ reason: 'approval_denied' });
      expect(rec.detail?.approval).toMatchObject({ outcome: 'overflow', limit: 'agent' });
      // Joining the pending approval is not a new one.
      const join2 = curl(p.url, `http://one.test:${origin.port}/`, { user: 'bot:pw' });
      await pendingFor(p, 'one.test', origin.port, 2);
      const o = curl(p.url, `http://two.test:${origin.port}/`, { user: 'other:pw2' });
      const b = await pendingFor(p, 'two.test', origin.port, 1, 'other');
      await api(p, `/api/approvals/${a.id}/approve`, { scope: 'once' });
      await api(p, `/api/approvals/${b.id}/deny`, {});
      expect((await first.done).status).toBe(200);
      expect((await join2.done).status).toBe(200);
      expect((await o.done).status).toBe(403);
    } finally {
      await p.close();
    }
  });

  it('report mode: an ask is forwarded and recorded as would-ask, nobody is asked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-report-'));
    const p = await startTestProxy({
      policyFile: policy(dir, '  - name: watcher\n    token_sha256: "' + sha('pw3') + '"\n    mode: report\n    on_no_match: ask\n'),
      dnsServers: [`127.0.0.1:${dns.port}`],
      store: { dataDir: dir },
      admin: { listen: '127.0.0.1:0' },
    });
    try {
      const res = await curl(p.url, `http://rep.test:${origin.port}/`, { user: 'watcher:pw3' }).done;
      expect(res.status).toBe(200);
      expect(await recordOf(p, 'rep.test')).toMatchObject({ verdict: 'deny', mode: 'report', reason: 'approval_required' });
      expect((await api<{ pending: PendingApproval[] }>(p, '/api/approvals')).json.pending).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('without the admin API nobody can decide: an ask is refused at once (approval_required)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-noadmin-'));
    const p = await startTestProxy({ policyFile: policy(dir), dnsServers: [`127.0.0.1:${dns.port}`], store: { dataDir: dir }, admin: null });
    try {
      const res = await curl(p.url, `http://one.test:${origin.port}/`, { user: 'bot:pw' }).done;
      expect(res.status).toBe(403);
      expect(await recordOf(p, 'one.test')).toMatchObject({ reason: 'approval_required' });
    } finally {
      await p.close();
    }
  });
});
