import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { JsonLinesSink } from '../../src/decisions/json-sink.js';
import { rec, tempDir } from './helpers.js';

// --log-file through sonic-boom, with lines handed over in batches: whatever the reader does, every
// record is either on its line or counted as dropped, one count per record (not per batch).
describe('JSON-lines log to a file whose reader stalls', () => {
  it('every record is written or counted as dropped, exactly once each', async () => {
    const t = tempDir('ae-jsonfile-');
    const fifo = path.join(t.dir, 'decisions.fifo');
    execFileSync('mkfifo', [fifo]);
    // The reader opens the FIFO at once but reads nothing for 1.5 s: the pipe fills and writes block.
    const reader = spawn('sh', ['-c', `exec 3<"${fifo}"; sleep 1.5; cat <&3`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let read = '';
    reader.stdout.setEncoding('utf8').on('data', (d: string) => (read += d));
    const exited = new Promise((r) => reader.once('exit', r));
    const warned: string[] = [];
    const sink = new JsonLinesSink(fifo, { maxBufferBytes: 256 * 1024, closeTimeoutMs: 10_000, logger: { warn: (_o, m) => void warned.push(m ?? ''), error: () => {} } });
    const total = 5000; // about 2.5 MB of lines against 64 KiB of pipe and 256 KiB of buffer
    const ids: string[] = [];
    for (let i = 0; i < total; i++) {
      const r = rec({ host: `h${i}.example` });
      ids.push(r.id);
      sink.write(r);
      if (i % 100 === 0) await new Promise((ok) => setImmediate(ok));
    }
    await sink.close();
    await exited;
    const lines = read.split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);
    expect(sink.dropped).toBeGreaterThan(0);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length + sink.dropped).toBe(total);
    // What was written is in order and complete lines only.
    expect(lines).toEqual(ids.filter((id) => lines.includes(id)));
    expect(warned).toHaveLength(1);
    t.cleanup();
  }, 30_000);
});
