import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { EnvHttpProxyAgent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInspectionCa } from '../../src/inspect/ca.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { closeServer, startHttpOrigin, testCert, type Origin } from '../helpers/origin.js';

const run = promisify(execFile);
const BIN = new URL('../../bin/agent-egress.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ae-inspect-'));
const REAL = 'ghp_h8RealTokenValue_9f8e7d6c5b4a';
const PLACEHOLDER = 'agent-egress-placeholder-github';

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

/** An HTTPS origin that echoes the request line and headers it received, as JSON. */
async function echoOrigin(tls: { key: Buffer | string; cert: Buffer | string }) {
  const seen: Seen[] = [];
  const server = createHttpsServer(tls, (req, res) => {
    req.resume();
    req.on('end', () => {
      const s = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
      seen.push(s);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(s));
    });
  });
  // Upgrades: /…/ws-declined answers a plain 200 (never a switch); anything else switches to an echo.
  server.on('upgrade', (req, socket: import('node:net').Socket) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if ((req.url ?? '').includes('ws-declined')) {
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ndeclined');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\n\r\n`);
    socket.on('data', (d: Buffer) => socket.write(`echo:${d.toString()}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { seen, port: (server.address() as AddressInfo).port, close: () => closeServer(server as never) };
}

/** A throwaway origin CA and leaves it signs, with openssl (the proxy trusts it through --upstream-ca). */
function originPki() {
  const o = (...a: string[]) => execFileSync('openssl', a, { stdio: 'ignore' });
  o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=h8 origin CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', join(dir, 'oca.key'), '-out', join(dir, 'oca.pem'));
  const leaf = (name: string, san: string) => {
    o('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.csr`));
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
    o('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'oca.pem'), '-CAkey', join(dir, 'oca.key'), '-CAcreateserial', '-days', '2',
      '-extfile', join(dir, `${name}.ext`), '-out', join(dir, `${name}.pem`));
    return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.pem`)) };
  };
  return { good: leaf('good', 'DNS:api.allowed.test,DNS:other.allowed.test'), wrong: leaf('wrong', 'DNS:elsewhere.test') };
}

let dns: TestDnsServer;
let good: Awaited<ReturnType<typeof echoOrigin>>;
let wrong: Awaited<ReturnType<typeof echoOrigin>>;
let untrusted: Awaited<ReturnType<typeof echoOrigin>>;
let plain: Origin;
let child: ChildProcess;
let stdout = '';
let stderr = '';
let proxyUrl = '';
let adminUrl = '';
const caFile = join(dir, 'inspect-ca.pem');
const logFile = join(dir, 'decisions.log');
const dataDir = join(dir, 'data');

beforeAll(async () => {
  const pki = originPki();
  good = await echoOrigin(pki.good);
  wrong = await echoOrigin(pki.wrong);
  untrusted = await echoOrigin(testCert());
  plain = await startHttpOrigin();
  dns = await startTestDnsServer();
  for (const n of ['api', 'other', 'wrong', 'untrusted', 'raw', 'plain']) dns.set(`${n}.allowed.test`, { A: ['127.0.0.1'] });
  await createInspectionCa(dir, { days: 2, force: false });
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
secrets:
  - name: github
    env: H8_GH_TOKEN
rules:
  - name: gh
    action: allow
    hosts: [api.allowed.test]
    ports: [${good.port}]
    inspect: true
    methods: [GET, POST]
    paths: [/repos/acme/**]
    secrets: [github]
  - name: other
    action: allow
    hosts: [other.allowed.test]
    ports: [${good.port}]
    inspect: true
  - name: bad-origins
    action: allow
    hosts: [wrong.allowed.test, untrusted.allowed.test]
    ports: [${wrong.port}, ${untrusted.port}]
    inspect: true
  - name: raw
    action: allow
    hosts: [raw.allowed.test]
    ports: [${untrusted.port}]
  - name: plain
    action: allow
    hosts: [plain.allowed.test]
    ports: [${plain.port}]
    methods: [GET]
    paths: [/echo/**]
    secrets: [github]
`,
  );
  child = spawn(
    'node',
    [BIN, 'serve', '--policy', policy, '--listen', '127.0.0.1:0', '--dns-server', `127.0.0.1:${dns.port}`,
      '--inspect-ca', caFile, '--inspect-ca-key', join(dir, 'inspect-ca-key.pem'), '--upstream-ca', join(dir, 'oca.pem'),
      '--log-file', logFile, '--data-dir', dataDir, '--admin-listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, H8_GH_TOKEN: REAL } },
  );
  child.stdout!.on('data', (d) => (stdout += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 15_000);
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (stderr.includes('agent-egress proxy listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`serve exited: ${stderr}`)));
  });
  proxyUrl = `http://127.0.0.1:${/"listen":"127\.0\.0\.1:(\d+)"/.exec(stderr)![1]}`;
  adminUrl = `http://127.0.0.1:${/"admin":"127\.0\.0\.1:(\d+)"/.exec(stderr)![1]}`;
}, 30_000);

afterAll(async () => {
  child?.kill('SIGTERM');
  await Promise.all([good?.close(), wrong?.close(), untrusted?.close(), plain?.close(), dns?.close()]);
});

const curl = (...args: string[]) =>
  run('curl', ['-sS', '--max-time', '5', '--proxy', proxyUrl, '--cacert', caFile, ...args], { encoding: 'utf8' }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  );

function records(): Record<string, unknown>[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function waitRecord(pred: (r: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let i = 0; i < 150; i++) {
    const hit = records().find(pred);
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 40));
  }
  throw new Error(`no matching record; have ${JSON.stringify(records().map((r) => [r.method, r.host, r.path, r.reason]))}`);
}

const api = () => `https://api.allowed.test:${good.port}`;

describe('HTTPS inspection with curl', () => {
  it('an allowed path reaches the origin with the real token where the agent sent the placeholder; both are records', async () => {
    const r = await curl('-H', `Authorization: Bearer ${PLACEHOLDER}`, '-D', '-', `${api()}/repos/acme/widgets?per_page=5`);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 /m);
    const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
    expect(body.url).toBe('/repos/acme/widgets?per_page=5');
    expect(body.headers.authorization).toBe(`Bearer ${REAL}`);
    expect(body.headers.host).toBe(`api.allowed.test:${good.port}`);
    const child = await waitRecord((x) => x.path === '/repos/acme/widgets' && x.method === 'GET');
    expect(child).toMatchObject({ verdict: 'allow', rule: 'gh', status: 200, host: 'api.allowed.test', port: good.port, secrets: ['github'] });
    const parent = await waitRecord((x) => x.id === child.parent);
    expect(parent).toMatchObject({ method: 'CONNECT', inspected: true, status: 200, rule: 'gh' });
  });

  it('a path or a method outside the rule gets 403 inside TLS with the reason, and the origin never sees it', async () => {
    const before = good.seen.length;
    const p = await curl('-D', '-', `${api()}/user/keys`);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/^HTTP\/1\.1 403 /m);
    expect(p.stdout).toMatch(/^X-Agent-Egress-Reason: path_not_allowed/im);
    expect(p.stdout).toContain('rule gh');
    const m = await curl('-D', '-', '-X', 'DELETE', `${api()}/repos/acme/widgets`);
    expect(m.stdout).toMatch(/^HTTP\/1\.1 403 /m);
    expect(m.stdout).toMatch(/^X-Agent-Egress-Reason: method_not_allowed/im);
    // Traversal out of the allowed tree is judged after normalisation; an encoded slash is refused.
    const t = await curl('-D', '-', '--path-as-is', `${api()}/repos/acme/%2e%2e/%2e%2e/user`);
    expect(t.stdout).toMatch(/^X-Agent-Egress-Reason: path_not_allowed/im);
    const s = await curl('-D', '-', `${api()}/repos/acme/..%2f..%2fuser`);
    expect(s.stdout).toMatch(/^HTTP\/1\.1 400 /m);
    expect(good.seen.length).toBe(before);
    await waitRecord((x) => x.path === '/user/keys' && x.reason === 'path_not_allowed' && x.status === 403 && typeof x.parent === 'string');
    await waitRecord((x) => x.method === 'DELETE' && x.reason === 'method_not_allowed');
  });

  it('the same placeholder sent to another allowed host is refused secret_not_allowed', async () => {
    const before = good.seen.length;
    const r = await curl('-D', '-', '-H', `x-api-key: ${PLACEHOLDER}`, `https://other.allowed.test:${good.port}/collect`);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403 /m);
    expect(r.stdout).toMatch(/^X-Agent-Egress-Reason: secret_not_allowed/im);
    expect(good.seen.length).toBe(before);
    const rec = await waitRecord((x) => x.host === 'other.allowed.test' && x.reason === 'secret_not_allowed');
    expect(rec).toMatchObject({ verdict: 'deny', status: 403, detail: { secret: 'github' } });
    // Without the placeholder the same host is fine.
    const ok = await curl(`https://other.allowed.test:${good.port}/collect`);
    expect(JSON.parse(ok.stdout).url).toBe('/collect');
  });

  it('an origin certificate for the wrong name or from an untrusted CA gives 502 upstream_tls', async () => {
    for (const [host, port] of [['wrong.allowed.test', wrong.port], ['untrusted.allowed.test', untrusted.port]] as const) {
      const r = await curl('-w', '%{http_connect}', '-o', '/dev/null', `https://${host}:${port}/`);
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe('502');
      await waitRecord((x) => x.host === host && x.reason === 'upstream_tls' && x.status === 502);
    }
    expect(wrong.seen).toHaveLength(0);
    expect(untrusted.seen).toHaveLength(0);
  });

  it('a rule without inspect still tunnels untouched bytes: the agent sees the origin certificate', async () => {
    const port = Number(new URL(proxyUrl).port);
    const sock = netConnect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(`CONNECT raw.allowed.test:${untrusted.port} HTTP/1.1\r\nHost: raw.allowed.test:${untrusted.port}\r\n\r\n`);
    const head = await new Promise<string>((r) => sock.once('data', (d) => r(d.toString())));
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    const tls = tlsConnect({ socket: sock, servername: 'raw.allowed.test', rejectUnauthorized: false });
    await new Promise((r) => tls.once('secureConnect', r));
    const seenCert = tls.getPeerX509Certificate()!;
    expect(seenCert.fingerprint256).toBe(new X509Certificate(testCert().cert).fingerprint256);
    tls.destroy();
    const rec = await waitRecord((x) => x.host === 'raw.allowed.test' && x.method === 'CONNECT');
    expect(rec.inspected).toBeUndefined();
  });

  it('plain HTTP: the same request rules and brokering, in one matcher', async () => {
    const ok = await curl('-H', `Authorization: token ${PLACEHOLDER}`, `http://plain.allowed.test:${plain.port}/echo/x`);
    expect(JSON.parse(ok.stdout).headers.authorization).toBe(`token ${REAL}`);
    const no = await curl('-D', '-', `http://plain.allowed.test:${plain.port}/other`);
    expect(no.stdout).toMatch(/^X-Agent-Egress-Reason: path_not_allowed/im);
    const leak = await curl('-D', '-', `http://plain.allowed.test:${plain.port}/echo/x?t=${PLACEHOLDER}`);
    expect(leak.stdout).toMatch(/^HTTP\/1\.1 200 /m);
    const bad = await curl('-D', '-', '--path-as-is', `http://plain.allowed.test:${plain.port}/echo/..;/admin`);
    expect(bad.stdout).toMatch(/^HTTP\/1\.1 400 /m);
  });
});

/** CONNECT through the proxy, TLS to the minted leaf (trusting only the inspection CA), then raw bytes inside. */
async function inspectedSocket(host: string, port: number) {
  const sock = netConnect(Number(new URL(proxyUrl).port), '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  await new Promise<void>((resolve, reject) => {
    let got = '';
    const on = (d: Buffer) => {
      got += d.toString('latin1');
      if (!got.includes('\r\n\r\n')) return;
      sock.off('data', on);
      if (/^HTTP\/1\.1 200 /.test(got)) resolve();
      else reject(new Error(got));
    };
    sock.on('data', on);
  });
  const tls = tlsConnect({ socket: sock, servername: host, ca: readFileSync(caFile) });
  await new Promise<void>((r, j) => tls.once('secureConnect', () => r()).once('error', j));
  let buf = '';
  tls.on('data', (d: Buffer) => (buf += d.toString()));
  const until = async (re: RegExp) => {
    for (let i = 0; i < 200 && !re.test(buf); i++) await new Promise((r) => setTimeout(r, 20));
    return buf;
  };
  return { tls, until, text: () => buf };
}

describe('WebSocket upgrades inside an inspected tunnel', () => {
  const upgrade = (path: string, extra = '') =>
    `GET ${path} HTTP/1.1\r\nHost: api.allowed.test:${good.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${extra}\r\n`;

  it('an allowed upgrade is switched only on the origin\'s 101, brokered like a request, and carries bytes both ways', async () => {
    const c = await inspectedSocket('api.allowed.test', good.port);
    c.tls.write(upgrade('/repos/acme/ws', `Authorization: Bearer ${PLACEHOLDER}\r\n`));
    const head = await c.until(/\r\n\r\n/);
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head).toMatch(/^upgrade: websocket/im);
    expect(good.seen.at(-1)).toMatchObject({ url: '/repos/acme/ws' });
    expect(good.seen.at(-1)!.headers.authorization).toBe(`Bearer ${REAL}`);
    c.tls.write('ping');
    expect(await c.until(/echo:ping/)).toContain('echo:ping');
    c.tls.destroy();
    const rec = await waitRecord((x) => x.path === '/repos/acme/ws');
    expect(rec).toMatchObject({ verdict: 'allow', rule: 'gh', status: 101, secrets: ['github'] });
    expect(typeof rec.parent).toBe('string');
  });

  it('an upgrade outside the rule\'s paths or methods gets 403 and never reaches the origin', async () => {
    const before = good.seen.length;
    const c = await inspectedSocket('api.allowed.test', good.port);
    c.tls.write(upgrade('/orgs/acme/ws'));
    const head = await c.until(/\r\n\r\n/);
    expect(head).toMatch(/^HTTP\/1\.1 403 /);
    expect(head).toMatch(/^X-Agent-Egress-Reason: path_not_allowed/im);
    c.tls.destroy();
    expect(good.seen.length).toBe(before);
  });

  it('an origin that answers 200 instead of 101 is relayed as an answer, never spliced', async () => {
    const c = await inspectedSocket('api.allowed.test', good.port);
    c.tls.write(upgrade('/repos/acme/ws-declined'));
    const got = await c.until(/declined/);
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got).toContain('declined');
    // No raw splice: bytes sent now are not echoed by the origin.
    c.tls.write('ping');
    await new Promise((r) => setTimeout(r, 200));
    expect(c.text()).not.toContain('echo:');
    c.tls.destroy();
    const rec = await waitRecord((x) => x.path === '/repos/acme/ws-declined');
    expect(rec).toMatchObject({ rule: 'gh', status: 200 });
  });
});

describe('other clients through the inspected tunnel', () => {
  it('Python requests (REQUESTS_CA_BUNDLE)', async () => {
    const py = `import requests,json,sys
r=requests.get(sys.argv[1]+'/repos/acme/py',headers={'Authorization':'Bearer ${PLACEHOLDER}'},timeout=5)
d=requests.post(sys.argv[1]+'/admin',timeout=5)
print(json.dumps({'status':r.status_code,'auth':r.json()['headers']['authorization'],'denied':d.status_code,'reason':d.headers.get('x-agent-egress-reason')}))`;
    const r = await run('python3', ['-c', py, api()], {
      encoding: 'utf8',
      env: { ...process.env, HTTPS_PROXY: proxyUrl, https_proxy: proxyUrl, NO_PROXY: '', no_proxy: '', REQUESTS_CA_BUNDLE: caFile },
    });
    expect(JSON.parse(r.stdout)).toEqual({ status: 200, auth: `Bearer ${REAL}`, denied: 403, reason: 'path_not_allowed' });
  });

  it('Node fetch with EnvHttpProxyAgent', async () => {
    const dispatcher = new EnvHttpProxyAgent({ httpsProxy: proxyUrl, noProxy: '', requestTls: { ca: readFileSync(caFile, 'utf8') } });
    const r = await undiciFetch(`${api()}/repos/acme/node`, { dispatcher, headers: { authorization: `Bearer ${PLACEHOLDER}` } });
    expect(r.status).toBe(200);
    expect(((await r.json()) as Seen).headers.authorization).toBe(`Bearer ${REAL}`);
    const d = await undiciFetch(`${api()}/orgs/acme`, { dispatcher });
    expect(d.status).toBe(403);
    expect(d.headers.get('x-agent-egress-reason')).toBe('path_not_allowed');
    await d.text();
    await dispatcher.close();
  });

  it('Go net/http (stdlib only, built offline)', async () => {
    const goDir = mkdtempSync(join(tmpdir(), 'ae-go-'));
    writeFileSync(
      join(goDir, 'main.go'),
      `package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

func main() {
	pem, _ := os.ReadFile(os.Args[1])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	proxy, _ := url.Parse(os.Args[2])
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, p := range []string{"/repos/acme/go", "/gists"} {
		req, _ := http.NewRequest("GET", os.Args[3]+p, nil)
		req.Header.Set("Authorization", "Bearer ${PLACEHOLDER}")
		r, err := c.Do(req)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Println(r.StatusCode, r.Header.Get("X-Agent-Egress-Reason"), len(b) > 0)
		if p == "/repos/acme/go" {
			os.Stdout.Write(b)
			fmt.Println()
		}
	}
}
`,
    );
    const env = { ...process.env, GOCACHE: join(goDir, 'cache'), GOPATH: join(goDir, 'gopath'), GOFLAGS: '-mod=mod', GO111MODULE: 'off', GOPROXY: 'off', GOTOOLCHAIN: 'local' };
    await run('go', ['build', '-o', join(goDir, 'client'), join(goDir, 'main.go')], { env, cwd: goDir, timeout: 120_000 });
    const r = await run(join(goDir, 'client'), [caFile, proxyUrl, api()], { encoding: 'utf8', timeout: 10_000 });
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('200  true');
    expect(JSON.parse(lines[1]).headers.authorization).toBe(`Bearer ${REAL}`);
    expect(lines[2]).toBe('403 path_not_allowed true');
  }, 150_000);
});

describe('records and start-up checks', () => {
  it('log query --path filters on the recorded path, in the store and through the API', async () => {
    await new Promise((r) => setTimeout(r, 400));
    const q = await run('node', [BIN, 'log', 'query', '--data-dir', dataDir, '--path', '/repos/acme/*', '--json', '--limit', '1000'], { encoding: 'utf8' });
    const rows = q.stdout.trim().split('\n').map((l) => JSON.parse(l) as { path: string; parent?: string });
    expect(rows.length).toBeGreaterThanOrEqual(4);
    for (const r of rows) expect(r.path.startsWith('/repos/acme/')).toBe(true);
    expect(rows.some((r) => r.path === '/repos/acme/widgets' && typeof r.parent === 'string')).toBe(true);
    const viaApi = await run('node', [BIN, 'log', 'query', '--url', adminUrl, '--data-dir', dataDir, '--path', '/user/*', '--json'], { encoding: 'utf8' });
    const apiRows = viaApi.stdout.trim().split('\n').map((l) => JSON.parse(l) as { path: string; reason: string });
    expect(apiRows.map((r) => [r.path, r.reason])).toEqual([['/user/keys', 'path_not_allowed']]);
  });

  it('check answers for request rules as the proxy did: inside an inspected tunnel and on plain HTTP', async () => {
    const policy = join(dir, 'policy.yaml');
    const check = (...a: string[]) =>
      run('node', [BIN, 'check', '--policy', policy, '--json', ...a], { encoding: 'utf8', env: { ...process.env, H8_GH_TOKEN: REAL } }).then(
        (r) => JSON.parse(r.stdout) as Record<string, unknown>,
        (e: { stdout: string }) => JSON.parse(e.stdout) as Record<string, unknown>,
      );
    expect(await check(`${api()}/repos/acme/x`, '--method', 'POST')).toMatchObject({ verdict: 'allow', rule: 'gh', method: 'POST', inspected: true });
    expect(await check(`${api()}/user/keys`)).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed', rule: 'gh' });
    expect(await check(`${api()}/repos/acme/x`, '--method', 'DELETE')).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed' });
    // Not inspected: the CONNECT alone is judged.
    expect(await check(`https://raw.allowed.test:${untrusted.port}/anything`, '--method', 'DELETE')).toMatchObject({ verdict: 'allow', method: 'CONNECT', inspected: false });
    expect(await check(`http://plain.allowed.test:${plain.port}/other`)).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed' });
    expect(await check(`http://plain.allowed.test:${plain.port}/echo/a/../b`)).toMatchObject({ verdict: 'allow', path: '/echo/b' });
  });

  it('a policy with an inspecting rule and no CA is refused at load with file:line', async () => {
    const p = join(dir, 'no-ca.yaml');
    writeFileSync(p, 'version: 1\nrules:\n  - name: a\n    action: allow\n    hosts: [api.allowed.test]\n    inspect: true\n');
    const r = await run('node', [BIN, 'serve', '--policy', p, '--listen', '127.0.0.1:0', '--no-store', '--no-decision-log'], { encoding: 'utf8' }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${p}:3:`);
    expect(r.stderr).toContain('inspect: true needs an inspection CA');
  });
});

describe('no secret value anywhere the proxy writes', () => {
  it('not in stdout, stderr, the log file, the store, the admin API or /metrics', async () => {
    // Let the store's batch commit.
    await new Promise((r) => setTimeout(r, 400));
    // The admin token serve generated in its data dir (the API needs it on loopback too).
    const auth = { authorization: `Bearer ${readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()}` };
    const api1 = await (await fetch(`${adminUrl}/api/decisions?limit=1000`, { headers: auth })).text();
    const pol = await (await fetch(`${adminUrl}/api/policy`, { headers: auth })).text();
    const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
    const log = readFileSync(logFile, 'utf8');
    const db = new Database(join(dataDir, 'decisions.sqlite'), { readonly: true });
    const rows = JSON.stringify(db.prepare('SELECT * FROM decisions').all());
    db.close();
    expect(log).toContain('secret_not_allowed');
    expect(rows).toContain('/repos/acme/widgets');
    expect(api1).toContain('/repos/acme/widgets');
    expect(pol).toContain(PLACEHOLDER);
    const hash = createHash('sha256').update(REAL).digest('hex');
    for (const [where, text] of Object.entries({ stdout, stderr, log, rows, api1, pol, metrics })) {
      expect(text.includes(REAL), where).toBe(false);
      expect(text.includes(hash), where).toBe(false);
    }
  });
});
