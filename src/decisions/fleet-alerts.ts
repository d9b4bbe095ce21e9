import type { SpikeDetector } from './alerts.js';
import type { DecisionRecord } from './record.js';
import type { TailPage } from './store/types.js';

/** What the feed needs from a shared store: the fleet-wide tail, and the one-holder lock. */
export interface FleetAlertSource {
  tailAfter(cursor: string | null, f?: object, limit?: number): Promise<TailPage>;
  holdsLead(): Promise<boolean>;
}

/**
 * Spike alerts over a fleet: each replica tries for the store's alerting lock; the one holding it reads
 * every replica's stored records (the fleet-wide tail, at most `pollMs` behind) into the detector. One
 * detector sees the whole spike, so it fires once, not once per replica. When the holder dies or loses
 * the database, its lock goes with its connection and another replica takes over from the head.
 */
export class FleetSpikeFeed {
  private timer: NodeJS.Timeout | null = null;
  private cursor: string | null = null;
  private running: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly store: FleetAlertSource,
    private readonly detector: SpikeDetector,
    private readonly pollMs = 500,
  ) {}

  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => {
      this.running ??= this.step().finally(() => {
        this.running = null;
      });
    }, this.pollMs);
    this.timer.unref();
  }

  private async step(): Promise<void> {
    try {
      if (!(await this.store.holdsLead())) {
        this.cursor = null; // not ours: when we get the lock, start from the head, not from history
        return;
      }
      if (this.cursor === null) {
        this.cursor = (await this.store.tailAfter(null)).cursor;
        return;
      }
      for (let i = 0; i < 20 && !this.closed; i++) {
        const page = await this.store.tailAfter(this.cursor, { verdict: 'deny' }, 1000);
        this.cursor = page.cursor;
        page.records.forEach((r: DecisionRecord) => this.detector.write(r));
        if (page.records.length < 1000) break;
      }
      this.detector.tick();
    } catch {
      // The store is away: the lock is gone with it; start again from the head when it is back.
      this.cursor = null;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    await this.detector.close();
  }
}
