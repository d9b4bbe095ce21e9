import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DecisionRecord } from '../../src/decisions/record.js';
import type { Reason, Verdict } from '../../src/policy/vocabulary.js';
import { newDecisionId } from '../../src/decisions/record.js';

export function tempDir(prefix = 'ae-store-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let clock = Date.parse('2025-01-01T00:00:00Z');

export function rec(over: Partial<DecisionRecord> & { verdict?: Verdict; reason?: Reason } = {}): DecisionRecord {
  const t = over.time ? Date.parse(over.time) : (clock += 1000);
  return {
    time: new Date(t).toISOString(),
    id: newDecisionId(t),
    agent: 'agent-a',
    client: '127.0.0.1:50000',
    method: 'CONNECT',
    host: 'api.example.com',
    port: 443,
    path: null,
    address: '93.184.216.34',
    verdict: 'allow',
    mode: 'enforce',
    rule: 'r1',
    reason: 'rule_allow',
    status: 200,
    bytesUp: 10,
    bytesDown: 20,
    timings: { dnsMs: 1, connectMs: 2, totalMs: 3 },
    policyHash: 'abcd',
    ...over,
  };
}

/**
 * Compile the given sources to plain JS so a test can spawn a separate node process running them.
 * Output lives under node_modules/.cache so the compiled files resolve this project's dependencies.
 */
export function compileForChild(entries: string[]): string {
  const root = path.resolve(import.meta.dirname, '../..');
  const out = mkdtempSync(path.join(root, 'node_modules', '.cache-ae-test-'));
  execFileSync(
    process.execPath,
    [
      path.join(root, 'node_modules/typescript/bin/tsc'),
      '--outDir', out, '--rootDir', path.join(root, 'src'), '--module', 'nodenext', '--moduleResolution', 'nodenext',
      '--target', 'es2022', '--skipLibCheck', '--noCheck', '--esModuleInterop',
      ...entries.map((e) => path.join(root, e)),
    ],
    { cwd: root, stdio: 'pipe', timeout: 60_000 },
  );
  return out;
}
