import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';

// Issue 9 test gap: a failed reload's lastError, kept by the real FilePolicyHolder and shown by the
// real admin API (the other admin tests use a stand-in holder).
const dir = mkdtempSync(join(tmpdir(), 'ae-reload-err-'));
const policyFile = join(dir, 'policy.yaml');
const good = (host: string) => `version: 1\nrules:\n  - name: r\n    action: allow\n    hosts: [${host}]\n`;
let proxy: TestProxy;
let base: string;

async function call(method: 'GET' | 'POST', path: string): Promise<{ status: number; json: any }> {
  const auth = { authorization: `Bearer ${proxy.admin!.token}` };
  const res = await request(base + path, { method, headers: method === 'POST' ? { 'content-type': 'application/json', ...auth } : auth });
  return { status: res.statusCode, json: await res.body.json() };
}

beforeAll(async () => {
  writeFileSync(policyFile, good('a.example'));
  proxy = await startTestProxy({ policyFile, policySettleMs: 0, store: { dataDir: join(dir, 'data') }, admin: { listen: '127.0.0.1:0' } });
  base = `http://127.0.0.1:${proxy.egress.admin!.port}`;
});

afterAll(async () => {
  await proxy?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a failed reload through the real holder and admin API', () => {
  it('keeps the running policy and reports lastError until a good reload clears it', async () => {
    const first = (await call('GET', '/api/policy')).json;
    expect(first).toMatchObject({ reloads: 0, reloadFailures: 0, lastError: null });

    writeFileSync(policyFile, 'version: 1\nrules:\n  - name: r\n    action: allow\n    hostz: [b.example]\n');
    const bad = await call('POST', '/api/policy/reload');
    expect(bad.status).toBe(422);
    expect(bad.json.ok).toBe(false);

    const after = (await call('GET', '/api/policy')).json;
    expect(after.hash).toBe(first.hash);
    expect(after.reloadFailures).toBe(1);
    expect(after.lastError).toEqual({ time: expect.any(String), message: expect.stringContaining(`${policyFile}:5:5`) });
    expect(after.lastError.message).toContain('unknown key "hostz"');
    expect(Date.parse(after.lastError.time)).not.toBeNaN();
    expect((await call('GET', '/readyz')).json).toEqual({ ready: true });
    expect(proxy.egress.holder.current().spec.rules[0].hosts).toEqual(['a.example']);

    // A second failure replaces the message; a missing file is a failure too.
    rmSync(policyFile);
    expect((await call('POST', '/api/policy/reload')).status).toBe(422);
    const missing = (await call('GET', '/api/policy')).json;
    expect(missing.reloadFailures).toBe(2);
    expect(missing.lastError.message).toContain('cannot read policy');

    writeFileSync(policyFile, good('c.example'));
    const ok = await call('POST', '/api/policy/reload');
    expect(ok.status).toBe(200);
    const cleared = (await call('GET', '/api/policy')).json;
    expect(cleared).toMatchObject({ reloads: 1, reloadFailures: 2, lastError: null, hash: ok.json.hash });
    expect(cleared.hash).not.toBe(first.hash);
  });
});
