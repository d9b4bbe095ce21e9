import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Ajv, { type ValidateFunction } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInspectionCa } from '../../src/inspect/ca.js';
import { toOcsf } from '../../src/decisions/ocsf.js';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { dig } from '../dns/client.js';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startHttpOrigin, startHttpsOrigin, testCert, type Origin } from '../helpers/origin.js';
import { rawExchange } from '../helpers/raw.js';
import { basicAuth, connectRequest, getRequest } from '../helpers/requests.js';

// Issue 14: decision records as OCSF events (--record-format ocsf, or --log-format ocsf), every kind of
// record validated against the published OCSF 1.5.0 JSON schemas (test/fixtures/ocsf/README.md).
// A real `serve` process, real clients (raw sockets, curl, dig), the JSON-lines file it writes.

const run = promisify(execFile);
const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');
const dir = mkdtempSync(join(tmpdir(), 'ae-ocsf-'));

const ajv = new Ajv({ strict: false, allErrors: true });
const SCHEMAS: Record<number, ValidateFunction> = {
  4001: ajv.compile(JSON.parse(readFileSync(join(ROOT, 'test/fixtures/ocsf/network_activity.json'), 'utf8'))),
  4002: ajv.compile(JSON.parse(readFileSync(join(ROOT, 'test/fixtures/ocsf/http_activity.json'), 'utf8'))),
  4003: ajv.compile(JSON.parse(readFileSync(join(ROOT, 'test/fixtures/ocsf/dns_activity.json'), 'utf8'))),
};
type Ev = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The errors of an event against the schema of the class it names; [] when valid. */
function schemaErrors(ev: Ev): string[] {
  const v = SCHEMAS[ev.class_uid];
  if (!v) return [`no schema for class_uid ${ev.class_uid}`];
  return v(ev) ? [] : (v.errors ?? []).map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`);
}

interface Serve {
  child: ChildProcess;
  stderr: () => string;
  proxy: number;
  dns: number | null;
  socks: number | null;
  exited: Promise<number | null>;
}

function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Serve> {
  return new Promise((resolveP, reject) => {
    const child = spawn('node', [BIN, 'serve', '--listen', '127.0.0.1:0', '--no-store', '--log-format', 'json', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    });
    let err = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 15_000);
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /"listen":"127\.0\.0\.1:(\d+)"/.exec(err);
      if (m) {
        clearTimeout(timer);
        const d = /"dns":\["127\.0\.0\.1:(\d+)"\]/.exec(err);
        const k = /"socks":"127\.0\.0\.1:(\d+)"/.exec(err);
        resolveP({ child, stderr: () => err, proxy: Number(m[1]), dns: d ? Number(d[1]) : null, socks: k ? Number(k[1]) : null, exited });
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`serve exited early: ${err}`));
    });
  });
}

async function stop(s: Serve | undefined): Promise<void> {
  if (!s) return;
  s.child.kill('SIGTERM');
  await s.exited;
}

function lines(file: string): Ev[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function waitLine(file: string, pred: (e: Ev) => boolean): Promise<Ev> {
  for (let i = 0; i < 150; i++) {
    const hit = lines(file).find(pred);
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 40));
  }
  throw new Error(`no matching line in ${file}; have ${JSON.stringify(lines(file).map((e) => [e.class_uid ?? e.method, e.type_name ?? e.host, e.dst_endpoint?.hostname ?? e.query?.hostname]))}`);
}

let dns: TestDnsServer;
let origin: Origin;
let tlsOrigin: Origin;
let s: Serve;
const logFile = join(dir, 'ocsf.log');
const caFile = join(dir, 'inspect-ca.pem');
const TOKEN = 'ocsf-test-secret-token-6f1e';

beforeAll(async () => {
  origin = await startHttpOrigin();
  tlsOrigin = await startHttpsOrigin();
  writeFileSync(join(dir, 'origin-ca.pem'), testCert().cert);
  dns = await startTestDnsServer();
  for (const n of ['allowed.test', 'tls.allowed.test', 'report.test']) dns.set(n, { A: ['127.0.0.1'] });
  await createInspectionCa(dir, { days: 2, force: false });
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
agents:
  - name: coder
    token_env: OCSF_CODER_TOKEN
  - name: reporter
    token_env: OCSF_CODER_TOKEN
    mode: report
rules:
  - name: origin
    action: allow
    hosts: [allowed.test]
    ports: [${origin.port}]
  - name: inspected
    action: allow
    hosts: [tls.allowed.test]
    ports: [${tlsOrigin.port}]
    inspect: true
  - name: no-paste
    action: deny
    hosts: [pastebin.com]
`,
  );
  s = await serve(
    ['--policy', policy, '--dns-server', `127.0.0.1:${dns.port}`, '--dns-listen', '127.0.0.1:0', '--socks-listen', '127.0.0.1:0', '--log-file', logFile, '--record-format', 'ocsf',
      '--inspect-ca', caFile, '--inspect-ca-key', join(dir, 'inspect-ca-key.pem'), '--upstream-ca', join(dir, 'origin-ca.pem')],
    { OCSF_CODER_TOKEN: TOKEN },
  );
}, 30_000);

afterAll(async () => {
  await stop(s);
  await Promise.all([origin?.close(), tlsOrigin?.close(), dns?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('--record-format ocsf: every kind of record is a valid OCSF 1.5 event', () => {
  it('CONNECT allowed: Network Activity "Traffic", Allowed, with both endpoints, the bytes and the rule', async () => {
    const r = await rawExchange(s.proxy, connectRequest(`allowed.test:${origin.port}`), 800);
    expect(r).toMatch(/^HTTP\/1\.1 200 /);
    const ev = await waitLine(logFile, (e) => e.class_uid === 4001 && e.dst_endpoint?.hostname === 'allowed.test');
    expect(schemaErrors(ev)).toEqual([]);
    expect(ev).toMatchObject({
      category_uid: 4,
      activity_id: 6,
      type_uid: 400106,
      action_id: 1,
      disposition_id: 1,
      status_id: 1,
      severity_id: 1,
      status_code: '200',
      status_detail: 'rule_allow',
      firewall_rule: { name: 'origin' },
      src_endpoint: { ip: '127.0.0.1' },
      dst_endpoint: { hostname: 'allowed.test', ip: '127.0.0.1', port: origin.port },
      metadata: { version: '1.5.0', product: { name: 'agent-egress', vendor_name: 'agent-egress' }, profiles: ['security_control'] },
      unmapped: { verdict: 'allow', mode: 'enforce' },
    });
    expect(ev.metadata.uid).toMatch(/^[0-9a-z]{12}[0-9a-f]{6}$/);
    expect(typeof ev.time).toBe('number');
    expect(Math.abs(ev.time - Date.now())).toBeLessThan(60_000);
    expect(ev.src_endpoint.port).toBeGreaterThan(0);
  });

  it('CONNECT denied: Network Activity "Refuse", Denied/Blocked, naming the deny rule', async () => {
    expect(await rawExchange(s.proxy, connectRequest('pastebin.com:443'), 800)).toMatch(/^HTTP\/1\.1 403 /);
    const ev = await waitLine(logFile, (e) => e.class_uid === 4001 && e.dst_endpoint?.hostname === 'pastebin.com');
    expect(schemaErrors(ev)).toEqual([]);
    expect(ev).toMatchObject({ activity_id: 5, activity_name: 'Refuse', action_id: 2, action: 'Denied', disposition_id: 2, disposition: 'Blocked', status_id: 2, status_code: '403', status_detail: 'rule_deny', firewall_rule: { name: 'no-paste' } });
    expect(ev.dst_endpoint).toEqual({ hostname: 'pastebin.com', port: 443 });
  });

  it('plain HTTP allowed and denied: HTTP Activity with method, url and status', async () => {
    const ok = await rawExchange(s.proxy, getRequest(`http://allowed.test:${origin.port}/some/path?token=x`), 1_500);
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
    const no = await rawExchange(s.proxy, getRequest('http://other.test/x'), 1_500);
    expect(no).toMatch(/^HTTP\/1\.1 403 /);
    const allowed = await waitLine(logFile, (e) => e.class_uid === 4002 && e.dst_endpoint?.hostname === 'allowed.test');
    const denied = await waitLine(logFile, (e) => e.class_uid === 4002 && e.dst_endpoint?.hostname === 'other.test');
    expect(schemaErrors(allowed)).toEqual([]);
    expect(schemaErrors(denied)).toEqual([]);
    expect(allowed).toMatchObject({
      activity_id: 3,
      activity_name: 'Get',
      type_uid: 400203,
      action_id: 1,
      http_request: { http_method: 'GET', url: { scheme: 'http', hostname: 'allowed.test', port: origin.port, path: '/some/path', url_string: `http://allowed.test:${origin.port}/some/path` } },
      http_response: { code: 200 },
    });
    // The query string is dropped, as in the native record (it often carries tokens).
    expect(JSON.stringify(allowed)).not.toContain('token=x');
    expect(allowed.traffic.bytes_in).toBeGreaterThan(0);
    expect(denied).toMatchObject({ action_id: 2, disposition_id: 2, http_response: { code: 403 }, status_detail: 'no_rule' });
    expect(denied.firewall_rule).toBeUndefined();
  });

  it('a wrong credential: Denied/Unauthorized, and no credential anywhere in the event', async () => {
    const r = await rawExchange(s.proxy, getRequest(`http://allowed.test:${origin.port}/a`, basicAuth('coder', 'wrong-password-77')), 1_500);
    expect(r).toMatch(/^HTTP\/1\.1 407 /);
    const good = await rawExchange(s.proxy, getRequest(`http://allowed.test:${origin.port}/b`, basicAuth('coder', TOKEN)), 1_500);
    expect(good).toMatch(/^HTTP\/1\.1 200 /);
    const denied = await waitLine(logFile, (e) => e.status_detail === 'auth_required');
    const agent = await waitLine(logFile, (e) => e.http_request?.url?.path === '/b');
    for (const ev of [denied, agent]) expect(schemaErrors(ev)).toEqual([]);
    expect(denied).toMatchObject({ class_uid: 4002, action_id: 2, disposition_id: 26, disposition: 'Unauthorized', http_response: { code: 407 } });
    expect(agent).toMatchObject({ src_endpoint: { name: 'coder', ip: '127.0.0.1' } });
    const text = readFileSync(logFile, 'utf8');
    for (const secret of [TOKEN, 'wrong-password-77', Buffer.from(`coder:${TOKEN}`).toString('base64')]) expect(text).not.toContain(secret);
  });

  it('report mode: the request goes through and the event says Observed/Logged at medium severity', async () => {
    const r = await rawExchange(s.proxy, getRequest(`http://report.test:${origin.port}/x`, basicAuth('reporter', TOKEN)), 1_500);
    expect(r).toMatch(/^HTTP\/1\.1 200 /);
    const ev = await waitLine(logFile, (e) => e.dst_endpoint?.hostname === 'report.test');
    expect(schemaErrors(ev)).toEqual([]);
    expect(ev).toMatchObject({ action_id: 3, action: 'Observed', disposition_id: 17, severity_id: 3, unmapped: { verdict: 'deny', mode: 'report' }, src_endpoint: { name: 'reporter', ip: '127.0.0.1' } });
  });

  it('SOCKS5 allowed and denied: Network Activity like CONNECT', async () => {
    const socks = (url: string) =>
      run('curl', ['-sS', '--max-time', '5', '--socks5-hostname', `127.0.0.1:${s.socks}`, '-o', '/dev/null', '-w', '%{http_code}', url], { encoding: 'utf8' }).then(
        (r) => r.stdout,
        (e: { stdout?: string }) => e.stdout ?? '',
      );
    expect(await socks(`http://allowed.test:${origin.port}/via-socks`)).toBe('200');
    await socks('http://pastebin.com/x');
    const ok = await waitLine(logFile, (e) => e.class_uid === 4001 && e.dst_endpoint?.hostname === 'allowed.test' && /SOCKS5/.test(e.message));
    const no = await waitLine(logFile, (e) => e.class_uid === 4001 && e.dst_endpoint?.hostname === 'pastebin.com' && /SOCKS5/.test(e.message));
    for (const ev of [ok, no]) expect(schemaErrors(ev)).toEqual([]);
    expect(ok).toMatchObject({ activity_id: 6, action_id: 1, firewall_rule: { name: 'origin' }, dst_endpoint: { port: origin.port } });
    expect(no).toMatchObject({ activity_id: 5, action_id: 2, disposition_id: 2, firewall_rule: { name: 'no-paste' } });
  });

  it('an unparseable request: Network Activity "Refuse", Rejected', async () => {
    expect(await rawExchange(s.proxy, 'NOT A REQUEST\r\n\r\n', 800)).toMatch(/^HTTP\/1\.1 400 /);
    const ev = await waitLine(logFile, (e) => e.status_detail === 'bad_request' && e.class_uid === 4001);
    expect(schemaErrors(ev)).toEqual([]);
    expect(ev).toMatchObject({ activity_id: 5, disposition_id: 25, disposition: 'Rejected' });
  });

  it('DNS allowed and refused: DNS Activity with the query and the rcode', async () => {
    const ok = await dig(s.dns!, 'allowed.test');
    expect(ok.status).toBe('NOERROR');
    const no = await dig(s.dns!, 'pastebin.com', 'AAAA');
    expect(no.status).toBe('NXDOMAIN');
    const allowed = await waitLine(logFile, (e) => e.class_uid === 4003 && e.query?.hostname === 'allowed.test');
    const denied = await waitLine(logFile, (e) => e.class_uid === 4003 && e.query?.hostname === 'pastebin.com');
    expect(schemaErrors(allowed)).toEqual([]);
    expect(schemaErrors(denied)).toEqual([]);
    expect(allowed).toMatchObject({ activity_id: 6, type_uid: 400306, rcode_id: 0, rcode: 'NoError', query: { type: 'A' }, action_id: 1, connection_info: { protocol_name: 'udp' } });
    expect(denied).toMatchObject({ rcode_id: 3, rcode: 'NXDomain', query: { type: 'AAAA' }, action_id: 2, disposition_id: 2, firewall_rule: { name: 'no-paste' } });
  });

  it('an inspected tunnel: Network Activity for the tunnel, HTTP Activity (https) for the request inside, correlated', async () => {
    const url = `https://tls.allowed.test:${tlsOrigin.port}/inside?q=1`;
    const r = await run('curl', ['-sS', '--max-time', '5', '--proxy', `http://127.0.0.1:${s.proxy}`, '--cacert', caFile, '-o', '/dev/null', '-w', '%{http_code}', url], { encoding: 'utf8' });
    expect(r.stdout).toBe('200');
    const inner = await waitLine(logFile, (e) => e.class_uid === 4002 && e.http_request?.url?.path === '/inside');
    const tunnel = await waitLine(logFile, (e) => e.class_uid === 4001 && e.metadata.uid === inner.metadata.correlation_uid);
    for (const ev of [inner, tunnel]) expect(schemaErrors(ev)).toEqual([]);
    expect(inner).toMatchObject({ http_request: { http_method: 'GET', url: { scheme: 'https', hostname: 'tls.allowed.test', port: tlsOrigin.port } }, http_response: { code: 200 }, firewall_rule: { name: 'inspected' } });
    expect(tunnel).toMatchObject({ dst_endpoint: { hostname: 'tls.allowed.test' }, unmapped: { inspected: true } });
  });

  it('every line the run wrote validates, and the check can fail', async () => {
    const all = lines(logFile);
    expect(all.length).toBeGreaterThanOrEqual(12);
    expect(new Set(all.map((e) => e.class_uid))).toEqual(new Set([4001, 4002, 4003]));
    expect(all.flatMap((e) => schemaErrors(e).map((x) => `${e.type_name}: ${x}`))).toEqual([]);
    // The schemas are strict: an unknown attribute, a wrong class or a missing time is refused.
    const ev = all[0];
    expect(schemaErrors({ ...ev, verdict: 'allow' })).not.toEqual([]);
    expect(schemaErrors({ ...ev, category_uid: 3 })).not.toEqual([]);
    const { time: _t, ...noTime } = ev;
    expect(schemaErrors(noTime)).not.toEqual([]);
  });
});

describe('choosing the format', () => {
  const rec: DecisionRecord = {
    time: '2026-01-02T03:04:05.678Z', id: '0000000000000abcdef', agent: null, client: '[::1]:4000', method: 'PATCH', host: 'api.example', port: 8080,
    path: '/x', address: '::1', verdict: 'allow', mode: 'enforce', rule: 'r', reason: 'rule_allow', status: 204, bytesUp: 3, bytesDown: 4,
    timings: { dnsMs: 1, connectMs: 2, totalMs: 10.6 }, policyHash: 'abc', secrets: ['gh'], detail: { hostHeaderMismatch: 'x' },
  };

  it('maps fields without an OCSF activity to Other and keeps the rest in unmapped', () => {
    const ev = toOcsf(rec);
    expect(schemaErrors(ev)).toEqual([]);
    expect(ev).toMatchObject({ class_uid: 4002, activity_id: 99, activity_name: 'Patch', time: Date.parse(rec.time), duration: 11, end_time: Date.parse(rec.time) + 11, src_endpoint: { ip: '::1', port: 4000 }, policy: { uid: 'abc' } });
    expect(ev.unmapped).toEqual({ verdict: 'allow', mode: 'enforce', timings: rec.timings, secrets: ['gh'], detail: rec.detail, method: 'PATCH' });
    expect(ev.http_request).toEqual({ uid: rec.id, url: { scheme: 'http', hostname: 'api.example', port: 8080, path: '/x', url_string: 'http://api.example:8080/x' } });
    // A query string kept by --log-query goes to url.query_string.
    const withQuery = toOcsf({ ...rec, method: 'GET', path: '/s?q=1&r=2' });
    expect(schemaErrors(withQuery)).toEqual([]);
    expect(withQuery.http_request.url).toMatchObject({ path: '/s', query_string: 'q=1&r=2', url_string: 'http://api.example:8080/s?q=1&r=2' });
    // A field a later record version adds (e.g. the replica) is not lost.
    expect(toOcsf({ ...rec, replica: 'pod-a' } as DecisionRecord).unmapped).toMatchObject({ replica: 'pod-a' });
    // A failure after an allow: Allowed by the policy, Error as the disposition, Network Activity "Fail".
    const failed = toOcsf({ ...rec, method: 'CONNECT', path: null, verdict: 'deny', reason: 'upstream_error', status: 502 });
    expect(schemaErrors(failed)).toEqual([]);
    expect(failed).toMatchObject({ class_uid: 4001, activity_id: 4, action_id: 1, disposition_id: 27, status_id: 2 });
  });

  it('--log-format ocsf is --record-format ocsf; native stays the default, unchanged', async () => {
    const alias = join(dir, 'alias.log');
    const native = join(dir, 'native.log');
    const a = await serve(['--allow', `allowed.test:${origin.port}`, '--allow-address', '127.0.0.1/32', '--dns-server', `127.0.0.1:${dns.port}`, '--log-file', alias, '--log-format', 'ocsf']);
    const n = await serve(['--allow', `allowed.test:${origin.port}`, '--allow-address', '127.0.0.1/32', '--dns-server', `127.0.0.1:${dns.port}`, '--log-file', native]);
    try {
      for (const p of [a.proxy, n.proxy]) expect(await rawExchange(p, connectRequest('pastebin.com:443'), 800)).toMatch(/^HTTP\/1\.1 403 /);
      const ev = await waitLine(alias, (e) => e.dst_endpoint?.hostname === 'pastebin.com');
      expect(schemaErrors(ev)).toEqual([]);
      // The operational log keeps its default: JSON on a pipe.
      expect(a.stderr()).toMatch(/^\{"level":30/m);
      const rec = await waitLine(native, (e) => e.host === 'pastebin.com');
      expect(Object.keys(rec)).toEqual(['time', 'id', 'agent', 'client', 'method', 'host', 'port', 'path', 'address', 'verdict', 'mode', 'rule', 'reason', 'status', 'bytesUp', 'bytesDown', 'timings', 'policyHash']);
      expect(rec).toMatchObject({ method: 'CONNECT', verdict: 'deny', reason: 'no_rule', status: 403 });
    } finally {
      await Promise.all([stop(a), stop(n)]);
    }
  });

  it.each([
    [['--record-format', 'xml'], {}, '--record-format'],
    [[], { AGENT_EGRESS_RECORD_FORMAT: 'cef' }, 'AGENT_EGRESS_RECORD_FORMAT'],
    [['--log-format', 'ocsf', '--record-format', 'native'], {}, '--record-format native'],
    [['--log-format', 'xml'], {}, '--log-format'],
  ])('a bad or contradicting format is one line and exit 2: %j %j', async (args, env, names) => {
    const r = await run('node', [BIN, 'serve', '--listen', '127.0.0.1:0', '--no-store', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 }).then(
      () => ({ code: 0, stdout: '', stderr: '' }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: '' });
    const out = r.stderr.trimEnd().split('\n');
    expect(out).toHaveLength(1);
    expect(out[0]).toContain(names);
    expect(out[0]).toMatch(/^agent-egress serve: /);
  });
});
