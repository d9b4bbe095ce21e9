import type { SpikeAlert } from './alerts.js';

/**
 * The last spike alerts this process raised, for the dashboard's timeline. In memory and bounded: the
 * operational log, the metric and the webhook stay the durable record of an alert.
 */
export class RecentAlerts {
  private readonly items: SpikeAlert[] = [];
  constructor(private readonly max = 200) {}

  push(a: SpikeAlert): void {
    this.items.push(a);
    if (this.items.length > this.max) this.items.splice(0, this.items.length - this.max);
  }

  /** Alerts at or after sinceMs (and before untilMs), oldest first. */
  list(sinceMs?: number, untilMs?: number): SpikeAlert[] {
    return this.items.filter((a) => {
      const t = Date.parse(a.time);
      return (sinceMs === undefined || t >= sinceMs) && (untilMs === undefined || t < untilMs);
    });
  }
}
