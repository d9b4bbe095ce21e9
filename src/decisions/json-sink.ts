import pino from 'pino';
import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';

/**
 * Decision records as JSON lines through pino: stdout by default, or a file (appended, created if needed).
 * Asynchronous writes with a small buffer keep the data plane off the disk; close() flushes synchronously.
 */
export class JsonLinesSink implements DecisionSink {
  private readonly dest: pino.DestinationStream & { flushSync(): void; end(): void };
  private readonly logger: pino.Logger;

  constructor(path?: string, opts: { sync?: boolean } = {}) {
    this.dest = pino.destination({ dest: path ?? 1, sync: opts.sync ?? false, minLength: opts.sync ? 0 : 4096, mkdir: true }) as never;
    // No level, no pid/hostname, no pino timestamp: the record carries its own time and is the whole line.
    this.logger = pino({ base: null, timestamp: false, formatters: { level: () => ({}) } }, this.dest);
  }

  write(record: DecisionRecord): void {
    this.logger.info(record);
  }

  async close(): Promise<void> {
    try {
      this.dest.flushSync();
    } catch {
      // A closed stdout (pipe gone) must not turn shutdown into a crash.
    }
  }
}
