import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './netns.js';

const dir = mkdtempSync(join(tmpdir(), 'ae-certs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ossl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
const run = (...args: string[]) => {
  try {
    return { code: 0, out: execFileSync('node', [CLI, 'certs', 'init', '--dir', dir, ...args], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (e) {
    const err = e as { status: number; stderr: string };
    return { code: err.status, out: err.stderr };
  }
};

describe('certs init', () => {
  it('writes a CA, a server certificate with the given SANs and agent client certificates that openssl verifies', () => {
    const r = run('--san', 'localhost', '--san', '127.0.0.1', '--san', 'egress', '--san', '::1', '--agent', 'coder', '--agent', 'reviewer');
    expect(r.code).toBe(0);
    const ca = join(dir, 'ca.crt');
    expect(ossl('verify', '-CAfile', ca, '-purpose', 'sslserver', join(dir, 'server.crt')).trim()).toMatch(/: OK$/);
    for (const a of ['coder', 'reviewer']) {
      expect(ossl('verify', '-CAfile', ca, '-purpose', 'sslclient', join(dir, 'agents', `${a}.crt`)).trim()).toMatch(/: OK$/);
      const text = ossl('x509', '-in', join(dir, 'agents', `${a}.crt`), '-noout', '-subject', '-ext', 'subjectAltName');
      expect(text).toContain(`CN = ${a}`);
      expect(text).toContain(`URI:urn:agent-egress:agent:${a}`);
      expect(statSync(join(dir, 'agents', `${a}.key`)).mode & 0o077).toBe(0);
    }
    const san = ossl('x509', '-in', join(dir, 'server.crt'), '-noout', '-ext', 'subjectAltName');
    for (const s of ['DNS:localhost', 'IP Address:127.0.0.1', 'DNS:egress', 'IP Address:0:0:0:0:0:0:0:1']) expect(san).toContain(s);
    // A client certificate is not a server certificate, and vice versa.
    expect(() => ossl('verify', '-CAfile', ca, '-purpose', 'sslserver', join(dir, 'agents', 'coder.crt'))).toThrow();
    expect(statSync(join(dir, 'ca.key')).mode & 0o077).toBe(0);
  });

  it('keeps the CA on a second run and adds new agents signed by it', () => {
    const before = readFileSync(join(dir, 'ca.crt'), 'utf8');
    expect(run('--agent', 'coder', '--agent', 'tester').code).toBe(0);
    expect(readFileSync(join(dir, 'ca.crt'), 'utf8')).toBe(before);
    expect(ossl('verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'agents', 'tester.crt')).trim()).toMatch(/: OK$/);
  });

  it('refuses bad agent names and SANs with exit 2', () => {
    expect(run('--agent', '../evil').code).toBe(2);
    expect(run('--san', 'bad name!').code).toBe(2);
  });
});
