import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCerts } from '../../src/certs/init.js';
import { startHttpOrigin, type Origin } from '../helpers/origin.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ae-tls-'));
const other = mkdtempSync(join(tmpdir(), 'ae-tls-other-'));
let origin: Origin;
let proxy: TestProxy;
let proxyUrl: string;

beforeAll(async () => {
  await initCerts({ dir, serverNames: ['localhost', '127.0.0.1'], agents: ['coder', 'stranger'], days: 2, force: false });
  // A second, unrelated CA: its client certificates must be refused by the proxy.
  await initCerts({ dir: other, serverNames: ['localhost'], agents: ['coder'], days: 2, force: false });
  origin = await startHttpOrigin();
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
address_guard: { exempt: [127.0.0.1/32] }
agents:
  - name: coder
    cert_names: [coder]
    rules:
      - name: coder-origin
        action: allow
        cidrs: [127.0.0.1/32]
        ports: [${origin.port}]
`,
  );
  proxy = await startTestProxy({
    policyFile: policy,
    tls: { certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key'), clientCaFile: join(dir, 'ca.crt') },
  });
  proxyUrl = `https://127.0.0.1:${proxy.port}`;
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
});

const curl = (...args: string[]) =>
  run('curl', ['-sS', '--max-time', '5', '--proxy', proxyUrl, '--proxy-cacert', join(dir, 'ca.crt'), ...args], { encoding: 'utf8' }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

describe('TLS listener with client certificates', () => {
  it('curl with the agent certificate is identified as that agent and forwarded', async () => {
    const r = await curl('--proxy-cert', join(dir, 'agents/coder.crt'), '--proxy-key', join(dir, 'agents/coder.key'), `http://127.0.0.1:${origin.port}/`);
    expect(r.stdout).toBe('hello');
    const rec = await proxy.sink.waitFor((x) => x.agent === 'coder');
    expect(rec).toMatchObject({ verdict: 'allow', rule: 'coder-origin' });
  });

  it("undici's ProxyAgent over TLS with a client certificate tunnels CONNECT", async () => {
    const dispatcher = new ProxyAgent({
      uri: proxyUrl,
      proxyTls: { ca: readFileSync(join(dir, 'ca.crt')), cert: readFileSync(join(dir, 'agents/coder.crt')), key: readFileSync(join(dir, 'agents/coder.key')) },
    });
    const res = await request(`http://127.0.0.1:${origin.port}/`, { dispatcher });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe('hello');
    await dispatcher.close();
  });

  it('a valid certificate of an agent without rules gets 403', async () => {
    const r = await curl('-o', '/dev/null', '-w', '%{http_code}', '--proxy-cert', join(dir, 'agents/stranger.crt'), '--proxy-key', join(dir, 'agents/stranger.key'), `http://127.0.0.1:${origin.port}/`);
    expect(r.stdout).toBe('403');
  });

  it('no client certificate: the TLS handshake is refused', async () => {
    const r = await curl(`http://127.0.0.1:${origin.port}/`);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toBe('hello');
  });

  it('a client certificate from another CA is refused', async () => {
    const r = await curl('--proxy-cert', join(other, 'agents/coder.crt'), '--proxy-key', join(other, 'agents/coder.key'), `http://127.0.0.1:${origin.port}/`);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toBe('hello');
  });
});
