import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

// Issue 9 item 10 (DNS rebinding / CSRF) and issue 10 (400 bodies name the parameter), through the
// real runtime: the proxy with its real FilePolicyHolder, store and admin API, run with --no-admin-auth
// (loopback), the mode in which these checks are the only thing between a web page and the API. The
// last block shows they hold in the default token mode too.
const dir = mkdtempSync(join(tmpdir(), 'ae-origin-'));
const policyFile = join(dir, 'policy.yaml');
const policyA = 'version: 1\nrules:\n  - name: a\n    action: allow\n    hosts: [a.example]\n';
const policyB = 'version: 1\nrules:\n  - name: b\n    action: allow\n    hosts: [b.example]\n';
let proxy: TestProxy;
let port: number;

interface Answer {
  status: number;
  json: any;
}

/** A real HTTP request to the admin listener with exactly these headers (Host included). */
function send(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, setHost: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let json: any = null;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const own = () => `127.0.0.1:${port}`;
const policyHash = async () => (await send('GET', '/api/policy', { host: own() })).json.hash as string;

beforeAll(async () => {
  writeFileSync(policyFile, policyA);
  proxy = await startTestProxy({
    policyFile,
    store: { dataDir: join(dir, 'data') },
    admin: { listen: '127.0.0.1:0', hosts: ['egress-admin.agents.svc.cluster.local'], noAuth: true },
  });
  port = proxy.egress.admin!.port;
});

afterAll(async () => {
  await proxy?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('admin API Host check (DNS rebinding)', () => {
  it.each([
    ['evil.example', '/api/decisions'],
    ['attacker.example:PORT', '/api/policy'],
    ['attacker.example.:PORT', '/api/decisions/summary'],
    ['127.0.0.1.attacker.example:PORT', '/api/policy'],
    ['localhost.attacker.example:PORT', '/'],
    ['[::1', '/healthz'],
  ])('refuses Host %s on %s with 421 and a reason', async (host, path) => {
    const r = await send('GET', path, { host: host.replace('PORT', String(port)) });
    expect(r.status).toBe(421);
    expect(r.json).toMatchObject({ statusCode: 421, error: 'Misdirected Request' });
    expect(r.json.message).toContain('is not a name of this admin API');
  });

  it('answers the listen address, other IP literals (probes use the pod IP), localhost and configured names', async () => {
    for (const host of [own(), `192.0.2.10:${port}`, `[::1]:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, 'egress-admin.agents.svc.cluster.local:3129']) {
      for (const path of ['/healthz', '/readyz', '/metrics', '/api/policy']) {
        const r = await send('GET', path, { host });
        expect(r.status, `${host} ${path}`).toBe(200);
      }
    }
  });
});

describe('admin API CSRF', () => {
  it('refuses a text/plain or form POST to reload (415) and does not reload', async () => {
    const before = await policyHash();
    writeFileSync(policyFile, policyB);
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined]) {
      const headers: Record<string, string> = { host: own() };
      if (ct) headers['content-type'] = ct;
      const r = await send('POST', '/api/policy/reload', headers, ct ? '{}' : undefined);
      expect(r.status, String(ct)).toBe(415);
      expect(r.json.message).toContain('application/json');
    }
    const p = (await send('GET', '/api/policy', { host: own() })).json;
    expect(p.hash).toBe(before);
    expect(p.reloads).toBe(0);
    writeFileSync(policyFile, policyA);
  });

  it.each([
    [{ origin: 'http://evil.example' }],
    [{ origin: 'null' }],
    [{ origin: 'http://localhost:1' }],
    [{ 'sec-fetch-site': 'cross-site' }],
    [{ 'sec-fetch-site': 'same-site' }],
  ])('refuses a cross-origin request %o with 403 (reads and reloads)', async (extra) => {
    const before = await policyHash();
    writeFileSync(policyFile, policyB);
    const post = await send('POST', '/api/policy/reload', { host: own(), 'content-type': 'application/json', ...extra });
    expect(post.status).toBe(403);
    expect(post.json.message).toContain('cross-origin request refused');
    const read = await send('GET', '/api/decisions', { host: own(), ...extra });
    expect(read.status).toBe(403);
    expect(await policyHash()).toBe(before);
    writeFileSync(policyFile, policyA);
  });

  it('accepts a same-origin JSON POST (the page) and a CLI POST without Origin', async () => {
    writeFileSync(policyFile, policyB);
    const page = await send('POST', '/api/policy/reload', { host: own(), origin: `http://${own()}`, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json' });
    expect(page.status).toBe(200);
    expect(page.json.ok).toBe(true);
    expect(proxy.egress.holder.current().spec.rules.map((r) => r.name)).toEqual(['b']);
    writeFileSync(policyFile, policyA);
    const cli = await send('POST', '/api/policy/reload', { host: own(), 'content-type': 'application/json' }, '');
    expect(cli.status).toBe(200);
    expect(proxy.egress.holder.current().spec.rules.map((r) => r.name)).toEqual(['a']);
    const read = await send('GET', '/api/decisions', { host: own(), origin: `http://${own()}`, 'sec-fetch-site': 'same-origin' });
    expect(read.status).toBe(200);
    // The static page may be opened from a link on another site: it holds no data.
    const html = await send('GET', '/', { host: own(), 'sec-fetch-site': 'cross-site' });
    expect(html.status).toBe(200);
  });
});

describe('admin API 400 bodies (issue 10)', () => {
  it.each([
    ['/api/decisions?limit=0', 'limit'],
    ['/api/decisions?decision=maybe', 'decision'],
    ['/api/decisions?since=yesterday', 'since'],
    ['/api/decisions?cursor=garbage', 'cursor'],
    ['/api/decisions?colour=red', 'colour'],
    ['/api/decisions/summary?limit=5', 'limit'],
    ['/api/decisions/summary?until=12x', 'until'],
    ['/api/decisions/bad%20id', 'id'],
  ])('%s -> 400 with param %s', async (path, param) => {
    const r = await send('GET', path, { host: own() });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ statusCode: 400, error: 'Bad Request', param });
    expect(r.json.message).toContain(param);
  });
});

describe('with the default admin token', () => {
  it('a rebinding Host is refused even with the right token, and a cross-origin POST too', async () => {
    const d2 = mkdtempSync(join(tmpdir(), 'ae-origin-tok-'));
    writeFileSync(join(d2, 'policy.yaml'), policyA);
    const p2 = await startTestProxy({ policyFile: join(d2, 'policy.yaml'), store: { dataDir: join(d2, 'data') }, admin: { listen: '127.0.0.1:0' } });
    const saved = port;
    try {
      port = p2.egress.admin!.port;
      const auth = { authorization: `Bearer ${p2.admin!.token}` };
      expect(p2.admin!.token).toMatch(/\S{16,}/);
      expect((await send('GET', '/api/policy', { host: own(), ...auth })).status).toBe(200);
      expect((await send('GET', '/api/policy', { host: `attacker.example:${port}`, ...auth })).status).toBe(421);
      const cross = await send('POST', '/api/policy/reload', { host: own(), origin: 'https://attacker.example', 'content-type': 'application/json', ...auth }, '{}');
      expect(cross.status).toBe(403);
      expect((await send('GET', '/api/policy', { host: own() })).status).toBe(401);
    } finally {
      port = saved;
      await p2.close();
      rmSync(d2, { recursive: true, force: true });
    }
  });
});
