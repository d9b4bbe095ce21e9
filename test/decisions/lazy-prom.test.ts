import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

// A proxy nobody scrapes never loads prom-client: the sinks count into plain fields and the registry is
// built on the first /metrics. Checked in a child process (this one has prom-client loaded already),
// against dist/ like the other start-up tests.
const ROOT = resolve(__dirname, '../..');
const CHILD = `
import { createRequire } from 'node:module';
import net from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const require = createRequire(${JSON.stringify(ROOT + '/package.json')});
const prom = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/prom-client/'));
const { startEgress } = await import(${JSON.stringify(ROOT + '/dist/runtime/serve.js')});
const { default: pino } = await import('pino');
const origin = net.createServer((s) => s.on('data', () => s.end('pong'))).listen(0, '127.0.0.1');
await new Promise((r) => origin.once('listening', r));
const port = origin.address().port;
const dir = mkdtempSync(join(tmpdir(), 'ae-lazy-prom-'));
const eg = await startEgress({ listen: '127.0.0.1:0', flags: { allow: ['127.0.0.1/32:' + port], deny: [], allowAddress: ['127.0.0.1/32'] }, dnsServers: [], logFile: join(dir, 'd.log'), store: { dataDir: dir }, admin: { listen: '127.0.0.1:0', noAuth: true }, logger: pino({ level: 'silent' }) });
const out = { afterStart: prom() };
await new Promise((ok, fail) => {
  const c = net.connect(eg.address.port, '127.0.0.1', () => c.write('CONNECT 127.0.0.1:' + port + ' HTTP/1.1\\r\\nHost: 127.0.0.1:' + port + '\\r\\n\\r\\n'));
  let got = '';
  c.on('data', (d) => { got += d; if (got.includes('\\r\\n\\r\\n') && !got.includes('ping-sent')) { got += 'ping-sent'; c.write('GET / HTTP/1.1\\r\\nHost: 127.0.0.1:' + port + '\\r\\n\\r\\n'); } });
  c.on('end', () => { out.tunnel = got.split('\\r\\n')[0]; out.echo = got.endsWith('pong') || got.includes('pong'); c.end(); setTimeout(ok, 300); });
  c.on('error', fail);
});
out.afterTunnel = prom();
const res = await fetch('http://127.0.0.1:' + eg.admin.port + '/metrics');
out.status = res.status;
out.contentType = res.headers.get('content-type');
out.metrics = await res.text();
out.afterScrape = prom();
await eg.close();
origin.close();
console.log(JSON.stringify(out));
`;

describe('prom-client is loaded on the first scrape', () => {
  it('a serve that proxied a tunnel has not loaded it; /metrics loads it and counts that tunnel', async () => {
    const stdout = await new Promise<string>((ok, fail) =>
      execFile('node', ['--input-type=module', '-e', CHILD], { cwd: ROOT, timeout: 30_000 }, (err, out, errOut) => (err ? fail(new Error(`${err.message}\n${errOut}`)) : ok(out))),
    );
    const out = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(out.tunnel).toBe('HTTP/1.1 200 Connection established');
    expect(out.echo).toBe(true);
    expect(out.afterStart).toBe(false);
    expect(out.afterTunnel).toBe(false);
    expect(out.status).toBe(200);
    expect(out.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(out.afterScrape).toBe(true);
    expect(out.metrics).toMatch(/^agent_egress_decisions_total\{verdict="allow",reason="[a-z_]+",agent="",rule="flag:allow:[^"]+",mode="enforce"\} 1$/m);
    expect(out.metrics).toMatch(/^agent_egress_bytes_total\{direction="up"\} \d+$/m);
    expect(out.metrics).toMatch(/^agent_egress_store_written_records \d+$/m);
  }, 40_000);
});
