// undici is loaded with the first webhook post, not by every proxy that could send one.
const request: typeof import('undici').request = async (...args) => (await import('undici')).request(...args);
import { safeJson } from './display.js';

export interface WebhookTarget {
  url: string;
  timeoutMs?: number;
  retries?: number;
  headers?: Record<string, string>;
}

/**
 * POSTs JSON to a webhook directly (never through the proxy), retrying with exponential backoff, and
 * keeps the deliveries in flight so a clean shutdown can wait for them. Used by the spike alerts and
 * the approval notifications. A delivery never throws: its failure is one error line.
 */
export class WebhookSender {
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly target: WebhookTarget,
    private readonly logger: { error(obj: object, msg?: string): void } | undefined,
    /** Names what failed in the error line ("spike alert webhook failed"). */
    private readonly what: string,
  ) {}

  send(body: unknown): void {
    const p = this.post(body).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private async post(body: unknown): Promise<void> {
    const w = this.target;
    const retries = w.retries ?? 3;
    const timeout = w.timeoutMs ?? 5000;
    let lastErr: unknown;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(8000, 250 * 2 ** (attempt - 1))).unref());
      try {
        const res = await request(w.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...w.headers },
          body: safeJson(body),
          headersTimeout: timeout,
          bodyTimeout: timeout,
          signal: AbortSignal.timeout(timeout),
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) return;
        lastErr = new Error(`webhook answered ${res.statusCode}`);
        if (res.statusCode >= 400 && res.statusCode < 500 && res.statusCode !== 429) break; // will not get better
      } catch (err) {
        lastErr = err;
      }
    }
    try {
      this.logger?.error({ err: lastErr, url: w.url }, this.what);
    } catch {
      /* ignore */
    }
  }

  /** Waits for deliveries in flight (bounded by their retries and timeouts). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }
}
