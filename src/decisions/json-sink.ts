import type { DecisionRecord } from './record.js';
import type { DecisionSink } from './sink.js';
import { safeJson } from './display.js';
import { openLineOut, type LineOut } from './line-out.js';
import { defineMetrics, type MetricsTarget } from './lazy-registry.js';

const FLUSH_MS = 100;

export interface JsonLinesOptions {
  /** Lines held in memory while the reader is slower than the proxy; beyond this, records are dropped (counted). Default 16 MiB. */
  maxBufferBytes?: number;
  /** On close, how long to wait for the reader to take what is buffered before giving up on it. Default 2 s. */
  closeTimeoutMs?: number;
  /** What a record becomes on its line (record-format.ts); default the record itself. */
  encode?: (record: DecisionRecord) => unknown;
  logger?: { error(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

/**
 * Decision records as JSON lines: stdout by default, or a file (appended, created with its directory),
 * through line-out.ts. The record is the whole line, serialised once here. Lines
 * are gathered until BATCH_BYTES or FLUSH_MS, whichever comes first: one write per batch (the largest cost
 * of recording, docs/performance.md), while a reader tailing the file sees each line within FLUSH_MS.
 *
 * Whatever reads stdout may stop (a stuck log shipper) or go away (EPIPE). Memory is bounded by
 * maxBufferBytes: past it a record is dropped, counted (`agent_egress_decision_log_dropped_records_total`)
 * and the loss logged once; the store still keeps every record. close() waits at most closeTimeoutMs for
 * the reader, then lets go, so shutdown ends whatever stdout does. Not pino.destination(): its exit hook
 * flushes synchronously and spins forever on a blocked pipe (and throws before a file is open).
 */
export class JsonLinesSink implements DecisionSink {
  private readonly out: LineOut;
  private failed = false;
  /** close() was called: new records are not taken any more. */
  private ending = false;
  private closed: Promise<void> | null = null;
  /** Lines written since the last timed flush (an idle proxy makes no empty writes). */
  private pending = false;
  private readonly timer: NodeJS.Timeout;
  private droppedCount = 0;
  private lossLogged = false;
  private readonly o: Required<Omit<JsonLinesOptions, 'logger' | 'encode'>>;
  private readonly encode: (record: DecisionRecord) => unknown;

  constructor(
    private readonly path?: string,
    private readonly opts: JsonLinesOptions = {},
  ) {
    this.o = { maxBufferBytes: opts.maxBufferBytes ?? 16 * 1024 * 1024, closeTimeoutMs: opts.closeTimeoutMs ?? 2000 };
    this.encode = opts.encode ?? ((r) => r);
    this.out = openLineOut(path, this.o.maxBufferBytes, {
      onDrop: () => this.lose(1, 'the reader is not keeping up'),
      onError: (err) => {
        // A full disk or a closed stdout must not take the proxy down; the store and metrics still get records.
        if (!this.failed && !this.ending) this.opts.logger?.error({ err, dest: this.where() }, 'decision log (JSON lines) failed; records go to the store only');
        this.failed = true;
      },
    });
    this.timer = setInterval(() => {
      if (this.pending && !this.failed && !this.ending) {
        this.pending = false;
        this.out.flush();
      }
    }, FLUSH_MS);
    this.timer.unref();
  }

  /** Records not written to the JSON-lines log (reader too slow or gone), since start. */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Expose the loss as a counter on this registry (built lazily or not). */
  registerMetrics(registry: MetricsTarget): void {
    const sink = this;
    defineMetrics(registry, (prom, r) => {
      new prom.Counter({
        name: 'agent_egress_decision_log_dropped_records_total',
        help: 'Decision records not written to the JSON-lines log (its reader too slow or gone); the store still has them',
        registers: [r],
        collect() {
          this.reset();
          this.inc(sink.dropped);
        },
      });
    });
  }

  write(record: DecisionRecord): void {
    if (this.failed || this.ending) {
      this.lose(1, this.failed ? 'the destination failed' : 'shutting down');
      return;
    }
    // safeJson: the same JSON, but a recorded control or bidi character cannot act on a terminal tailing it.
    this.out.write(safeJson(this.encode(record)) + '\n');
    this.pending = true;
  }

  private where(): string {
    return this.path ?? 'stdout';
  }

  private lose(n: number, why: string): void {
    this.droppedCount += n;
    if (this.lossLogged) return;
    this.lossLogged = true;
    try {
      this.opts.logger?.warn(
        { dest: this.where(), maxBufferBytes: this.o.maxBufferBytes },
        `decision log (JSON lines) is dropping records: ${why}; they are counted in agent_egress_decision_log_dropped_records_total, and the store keeps every record`,
      );
    } catch {
      /* reporting must not throw into the proxy */
    }
  }

  /** Hand what is buffered to the reader, waiting at most closeTimeoutMs; never throws, never hangs. */
  close(): Promise<void> {
    if (!this.closed) {
      this.ending = true;
      clearInterval(this.timer);
      this.closed = this.out.end(this.o.closeTimeoutMs);
    }
    return this.closed;
  }
}
