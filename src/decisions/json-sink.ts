import pino from 'pino';
import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';

type Destination = ReturnType<typeof pino.destination>;

/**
 * Decision records as JSON lines through pino's destination (sonic-boom): stdout by default, or a file
 * (appended, created with its directory). The record is the whole line — no level, pid or second clock —
 * so it is serialised once, here, and handed to the asynchronous writer, which coalesces lines while a
 * write is in flight and never blocks the data plane. close() flushes synchronously.
 */
export class JsonLinesSink implements DecisionSink {
  private readonly dest: Destination;
  private failed = false;

  constructor(path?: string, opts: { sync?: boolean } = {}) {
    this.dest = pino.destination({ dest: path ?? 1, sync: opts.sync ?? false, minLength: 0, mkdir: true });
    this.dest.on('error', () => {
      // A full disk or a closed stdout must not take the proxy down; the store and metrics still get records.
      this.failed = true;
    });
  }

  write(record: DecisionRecord): void {
    if (this.failed) return;
    this.dest.write(JSON.stringify(record) + '\n');
  }

  async close(): Promise<void> {
    try {
      this.dest.flushSync();
    } catch {
      // Nothing more can be done for a destination that is gone.
    }
  }
}
