import type { DecisionRecord } from './record.js';

/**
 * Where decision records go. The proxy only knows this interface; the JSON-lines log, the store and
 * the alerting live behind it. write() must never throw and never block the caller on I/O.
 */
export interface DecisionSink {
  write(record: DecisionRecord): void;
  /** Flush everything accepted so far; called on shutdown. */
  close(): Promise<void>;
}

/** Fans one record out to several sinks; one failing sink never stops the others. */
export class FanoutSink implements DecisionSink {
  constructor(private readonly sinks: DecisionSink[]) {}
  add(sink: DecisionSink): void {
    this.sinks.push(sink);
  }
  write(record: DecisionRecord): void {
    for (const s of this.sinks) {
      try {
        s.write(record);
      } catch {
        // A sink is required not to throw; if one does, the others still get the record.
      }
    }
  }
  async close(): Promise<void> {
    await Promise.allSettled(this.sinks.map((s) => s.close()));
  }
}
