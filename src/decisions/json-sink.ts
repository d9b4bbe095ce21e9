import pino from 'pino';
import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';
import { safeJson } from './display.js';

type Destination = ReturnType<typeof pino.destination>;

// sonic-boom requires minLength below its 16 KiB maxWrite.
const BATCH_BYTES = 8 * 1024;
const FLUSH_MS = 100;

/**
 * Decision records as JSON lines through pino's destination (sonic-boom): stdout by default, or a file
 * (appended, created with its directory). The record is the whole line — no level, pid or second clock —
 * so it is serialised once, here, and handed to the asynchronous writer. Lines are gathered until
 * BATCH_BYTES or FLUSH_MS, whichever comes first: one write per batch instead of one per decision (the
 * largest cost of recording, measured in docs/performance.md), while a reader tailing the file sees
 * each line within FLUSH_MS. close() flushes synchronously.
 */
export class JsonLinesSink implements DecisionSink {
  private readonly dest: Destination;
  private failed = false;
  /** Lines written since the last timed flush (an idle proxy makes no empty writes). */
  private pending = false;
  private readonly timer: NodeJS.Timeout;

  constructor(path?: string, opts: { sync?: boolean } = {}) {
    const sync = opts.sync ?? false;
    this.dest = pino.destination({ dest: path ?? 1, sync, minLength: sync ? 0 : BATCH_BYTES, mkdir: true });
    this.timer = setInterval(() => {
      if (this.pending && !this.failed) {
        this.pending = false;
        this.dest.flush();
      }
    }, FLUSH_MS);
    this.timer.unref();
    this.dest.on('error', () => {
      // A full disk or a closed stdout must not take the proxy down; the store and metrics still get records.
      this.failed = true;
    });
  }

  write(record: DecisionRecord): void {
    if (this.failed) return;
    // safeJson: the same JSON, but a recorded control or bidi character cannot act on a terminal tailing it.
    this.dest.write(safeJson(record) + '\n');
    this.pending = true;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    try {
      this.dest.flushSync();
    } catch {
      // Nothing more can be done for a destination that is gone.
    }
  }
}
