import { execFile } from 'node:child_process';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderTable, runQuery, runSummary, runTail } from '../../src/cli/commands/log.js';
import { readdirSync, readFileSync } from 'node:fs';
import { sharedModule } from '../../src/admin/assets.js';
import { displaySafe, safeJson } from '../../src/decisions/display.js';
import { SpikeDetector } from '../../src/decisions/alerts.js';
import type { DecisionRecord } from '../../src/decisions/record.js';
import { rawUdp } from '../dns/client.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';
import { rec, tempDir } from './helpers.js';

// Issue 9 item 5: names an attacker controls (DNS query names, CONNECT targets, paths, Host headers)
// go through the real proxy and DNS filter into the real store; what an operator reads must not carry
// a single raw control, C1 or bidi character, nor let a record forge a row.

// Every character an operator's terminal or a browser could act on (CR and LF included; only the
// newline that ends each output line is allowed, and it is checked separately).
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/u;

const FORGED_ROW = '2026-01-01 00:00:00Z  allow     trusted  GET  api.example.com:443  rule_allow  ok';
const PAYLOADS = [
  'a\x1b]0;pwned\x07.example', // OSC: set the terminal title
  'b\x1b[2J\x1b[H.example', // CSI: clear the screen
  `c\r\n${FORGED_ROW}.example`, // a forged "allow" row on a line of its own
  'd\u202eelpmaxe.txt.example', // RIGHT-TO-LEFT OVERRIDE
  'e\u2066f\u2069\u200b\u0085\x7f.example', // isolates, zero width, NEL (C1), DEL
];

const t = tempDir('ae-term-');
let proxy: TestProxy;
let dnsPort: number;

function dnsQuery(name: string): Buffer {
  return dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
}

function capture() {
  const chunks: string[] = [];
  return { out: (s: string) => void chunks.push(s), text: () => chunks.join('') };
}

function runCli(args: string[]): Promise<string> {
  const bin = path.resolve(import.meta.dirname, '../../bin/agent-egress.js');
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [bin, ...args], { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
}

/** A table's data lines each end with the record's id: a line that does not is a forged row. */
function expectSafeTable(text: string, ids: string[]): void {
  expect(text).not.toMatch(RAW);
  const lines = text.trimEnd().split('\n').filter((l) => l.length > 0 && !l.startsWith('deny* ='));
  expect(lines[0]).toMatch(/^TIME\s+DECISION/);
  expect(lines.length - 1).toBe(ids.length);
  const rows = lines.slice(1);
  for (const l of rows) expect(ids.filter((id) => l.includes(id))).toHaveLength(1);
  for (const id of ids) expect(rows.filter((l) => l.includes(id))).toHaveLength(1);
  expect(text).not.toContain(`\n${FORGED_ROW}`);
}

let stored: DecisionRecord[] = [];

beforeAll(async () => {
  const policyFile = path.join(t.dir, 'policy.yaml');
  writeFileSync(policyFile, 'version: 1\nrules:\n  - name: api\n    action: allow\n    hosts: [api.example.com]\n');
  proxy = await startTestProxy({ policyFile, store: { dataDir: t.dir }, dns: { listen: ['127.0.0.1:0'], rateLimit: null }, dnsServers: ['127.0.0.1:9'] });
  dnsPort = proxy.egress.dns!.listeners[0].port;
  for (const name of PAYLOADS) {
    expect(await rawUdp(dnsPort, dnsQuery(name), { waitMs: 3000 })).not.toBeNull();
    // The same bytes as a CONNECT target, as a path and as a Host header on the plain-HTTP path.
    await rawExchange(proxy.port, Buffer.from(`CONNECT ${name}:443 HTTP/1.1\r\nHost: x\r\n\r\n`, 'utf8'), 1500);
    await rawExchange(proxy.port, Buffer.from(`GET http://blocked.example/${name} HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`, 'utf8'), 1500);
  }
  await proxy.egress.store!.flush();
  stored = (await proxy.egress.store!.query({ limit: 1000 })).records;
});

afterAll(async () => {
  await proxy?.close();
  t.cleanup();
});

describe('terminal output escapes what was recorded', () => {
  it('the store really holds the raw names (the test is not vacuous), and JSON keeps them exact', async () => {
    const raw = stored.filter((r) => RAW.test(r.host) || RAW.test(r.path ?? '') || RAW.test(JSON.stringify(r.detail ?? {})));
    // At least the DNS query names are recorded as they arrived: every payload, through the DNS filter.
    expect(stored.filter((r) => r.method === 'DNS' && PAYLOADS.includes(r.host)).length).toBe(PAYLOADS.length);
    expect(raw.length).toBeGreaterThanOrEqual(PAYLOADS.length);
    const j = capture();
    await runQuery({ dataDir: t.dir, limit: '1000', json: true }, j.out);
    expect(j.text()).not.toMatch(RAW);
    const parsed = j.text().trimEnd().split('\n').map((l) => JSON.parse(l) as DecisionRecord);
    expect(parsed).toEqual(stored);
  });

  it('log query, log summary and log tail print escapes, never the bytes, and no forged row', async () => {
    const q = capture();
    await runQuery({ dataDir: t.dir, limit: '1000' }, q.out);
    expectSafeTable(q.text(), stored.map((r) => r.id));
    expect(q.text()).toContain('\\x1b]0;pwned\\x07');
    expect(q.text()).toContain('\\u{202e}');

    const s = capture();
    await runSummary({ dataDir: t.dir, since: '1h' }, s.out);
    expect(s.text()).not.toMatch(RAW);
    expect(s.text()).not.toContain(`\n${FORGED_ROW}`);

    // tail: records stored after it started.
    const ac = new AbortController();
    const got = capture();
    const tail = runTail({ dataDir: t.dir }, ac.signal, got.out, 20);
    await new Promise((r) => setTimeout(r, 200));
    const fresh = PAYLOADS.map((host) => rec({ time: new Date().toISOString(), host, agent: 'tail\x1b[31m', verdict: 'deny', reason: 'no_rule', rule: null }));
    for (const r of fresh) proxy.egress.store!.write(r);
    proxy.egress.store!.flush();
    for (let i = 0; i < 100 && got.text().split('\n').length < fresh.length + 2; i++) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await tail;
    expectSafeTable(got.text(), fresh.map((r) => r.id));
  });

  it('the real CLI binary prints no raw control bytes either', async () => {
    const out = await runCli(['log', 'query', '--data-dir', t.dir, '--limit', '1000']);
    expect(out).not.toMatch(RAW);
    expect(out).not.toContain(`\n${FORGED_ROW}`);
    const json = await runCli(['log', 'query', '--data-dir', t.dir, '--limit', '1000', '--json']);
    expect(json).not.toMatch(RAW);
    expect(json.trimEnd().split('\n').map((l) => JSON.parse(l).host)).toContain(PAYLOADS[0]);
  });

  it('the admin page escapes with the same function as the CLI', () => {
    const shared = sharedModule();
    const m = /export const UNSAFE = (.*);\nexport const displaySafe = ([\s\S]*?\n\});/.exec(shared);
    expect(m).not.toBeNull();
    const pageSafe = new Function(`const UNSAFE = ${m![1]}; return (${m![2]});`)() as (s: string) => string;
    for (const p of PAYLOADS) {
      expect(pageSafe(p)).toBe(displaySafe(p));
      expect(pageSafe(p)).not.toMatch(RAW);
    }
    // No page script parses HTML: every string reaches the DOM as text.
    const dir = new URL('../../src/admin/page/', import.meta.url);
    const scripts = readdirSync(dir).filter((f) => f.endsWith('.js'));
    expect(scripts.length).toBeGreaterThanOrEqual(8);
    for (const f of scripts) expect(readFileSync(new URL(f, dir), 'utf8'), f).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
  });

  it('a spike alert logs escaped names and posts exact ones as JSON without raw bytes', () => {
    const lines: string[] = [];
    const logger = { warn: (o: object, msg?: string) => void lines.push(JSON.stringify(o) + ' ' + msg), error: () => {} };
    const d = new SpikeDetector({ threshold: 3, multiplier: 1, logger });
    for (let i = 0; i < 3; i++) d.write(rec({ agent: 'x\u202e\x1b]0;t\x07', host: PAYLOADS[i], verdict: 'deny', reason: 'no_rule', rule: null }));
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toMatch(RAW);
    expect(lines[0]).not.toMatch(/\\u001b|\\u0007/); // JSON-escaped control bytes would still reach a pretty-printer raw
    expect(safeJson({ h: PAYLOADS[4] })).not.toMatch(RAW);
    expect(JSON.parse(safeJson({ h: PAYLOADS[4] })).h).toBe(PAYLOADS[4]);
  });

  it('the alert webhook gets JSON with the exact names and no raw control bytes', async () => {
    const bodies: Buffer[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
      const d = new SpikeDetector({ threshold: 3, multiplier: 1, webhook: { url, retries: 0 } });
      for (let i = 0; i < 3; i++) d.write(rec({ agent: 'w\u202e', host: PAYLOADS[i], verdict: 'deny', reason: 'no_rule', rule: null }));
      await d.close();
      expect(bodies).toHaveLength(1);
      const text = bodies[0].toString('utf8');
      expect(text).not.toMatch(RAW);
      const alert = JSON.parse(text);
      expect(alert.agent).toBe('w\u202e');
      expect(alert.topDestinations.map((x: { host: string }) => x.host).sort()).toEqual(PAYLOADS.slice(0, 3).sort());
    } finally {
      server.close();
    }
  });

  it('renderTable escapes every column', () => {
    const r = rec({ agent: 'ag\x1b[2J', method: 'G\rET', host: PAYLOADS[2], rule: 'r\u202e', reason: 'no_rule' });
    const out = renderTable([r]);
    expectSafeTable(out, [r.id]);
  });
});
