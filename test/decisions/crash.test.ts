import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { openSqliteStoreReadOnly } from '../../src/decisions/store/sqlite.js';
import { compileForChild, tempDir } from './helpers.js';

// A writer in its own process: opens the store and writes records in a loop (optionally forever).
const WRITER = `
const { createSqliteStore } = await import(process.argv[2]);
const [dataDir, count, tag] = [process.argv[3], Number(process.argv[4]), process.argv[5]];
// repeats: false: every record is its own row, so the row count below is the count written.
const store = createSqliteStore({ dataDir, flushIntervalMs: 5, batchSize: 50, repeats: false, onError: (e) => console.error(e.message) });
let n = 0;
let signalled = false;
function burst() {
  for (let i = 0; i < 200 && (count === 0 || n < count); i++, n++) {
    const t = Date.now();
    store.write({ time: new Date(t).toISOString(), id: tag + '-' + String(n).padStart(8, '0'), agent: tag, client: '127.0.0.1:1',
      method: 'CONNECT', host: 'h' + (n % 7) + '.example.com', port: 443, path: null, address: null, verdict: n % 3 ? 'allow' : 'deny',
      mode: 'enforce', rule: null, reason: n % 3 ? 'rule_allow' : 'no_rule', status: 200, bytesUp: 0, bytesDown: 0,
      timings: { dnsMs: null, connectMs: null, totalMs: null }, policyHash: null });
  }
  if (!signalled && store.stats().written > 0) { signalled = true; process.stdout.write('writing\\n'); }
  if (count === 0 || n < count) setTimeout(burst, 1);
  else store.close().then(() => process.stdout.write('done ' + n + '\\n'));
}
burst();
`;

let compiled: string;
let script: string;
const t = tempDir('ae-crash-');

beforeAll(() => {
  compiled = compileForChild(['src/decisions/store/sqlite.ts']);
  script = path.join(t.dir, 'writer.mjs');
  writeFileSync(script, WRITER);
}, 60_000);
afterAll(() => {
  rmSync(compiled, { recursive: true, force: true });
  t.cleanup();
});

function run(dataDir: string, count: number, tag: string, until: string) {
  const mod = pathToFileURL(path.join(compiled, 'decisions/store/sqlite.js')).href;
  const child = spawn(process.execPath, [script, mod, dataDir, String(count), tag], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const reached = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child did not print ${until}; stderr: ${err}`)), 20_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes(until)) {
        clearTimeout(timer);
        resolve(out);
      }
    });
    child.on('exit', () => {
      clearTimeout(timer);
      if (!out.includes(until)) reject(new Error(`child exited early; stderr: ${err}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig ? -1 : null))));
  return { child, reached, exited };
}

describe('store across processes', () => {
  it('after kill -9 in the middle of a write burst the store opens cleanly and the chain verifies', async () => {
    const dataDir = path.join(t.dir, 'crash');
    const w = run(dataDir, 0, 'crash', 'writing');
    await w.reached;
    // Let it write a few more batches, then kill it mid-stream.
    await new Promise((r) => setTimeout(r, 150));
    w.child.kill('SIGKILL');
    expect(await w.exited).toBe(-1);
    const ro = openSqliteStoreReadOnly({ dataDir });
    const v = await ro.verify();
    const page = await ro.query({ limit: 1 });
    await ro.close();
    expect(v.ok).toBe(true);
    expect(v.checked).toBeGreaterThan(0);
    expect(page.records).toHaveLength(1);
    // And a writer can append again on top of the crashed file.
    const again = run(dataDir, 100, 'after', 'done');
    await again.reached;
    const ro2 = openSqliteStoreReadOnly({ dataDir });
    const v2 = await ro2.verify();
    await ro2.close();
    expect(v2).toMatchObject({ ok: true, checked: v.checked + 100 });
  });

  it('two processes appending to one file keep one valid chain and lose nothing', async () => {
    const dataDir = path.join(t.dir, 'shared');
    const a = run(dataDir, 3000, 'a', 'done');
    const b = run(dataDir, 3000, 'b', 'done');
    await Promise.all([a.reached, b.reached]);
    const ro = openSqliteStoreReadOnly({ dataDir });
    const v = await ro.verify();
    const s = await ro.summary({});
    await ro.close();
    expect(v).toMatchObject({ ok: true, checked: 6000 });
    expect(s.topAgents.map((x) => [x.agent, x.count]).sort()).toEqual([
      ['a', 3000],
      ['b', 3000],
    ]);
  });
});
