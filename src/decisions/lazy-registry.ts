import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';

export type PromClient = typeof Prom;
/** Registers metrics on a built registry. */
export type MetricDefiner = (prom: PromClient, registry: Prom.Registry) => void;

const require = createRequire(import.meta.url);

/** prom-client, loaded on first use (synchronously: it is CommonJS). */
export function promClient(): PromClient {
  return require('prom-client') as PromClient;
}

/**
 * A Prometheus registry built on first use (the first scrape, or whoever asks for `registry()`). prom-client
 * and its dependencies cost ~12 MiB of RSS and a few hundred ms at start (docs/performance.md), and a proxy
 * nobody scrapes never needs them: the sinks count into plain fields and register *definers* here, which
 * create the real metrics, reading those fields at scrape time, when the registry is built. The metrics
 * are registered in definer order, so the exposition is the same as registering them at start.
 */
export class LazyRegistry {
  private built: Prom.Registry | null = null;
  private readonly definers: MetricDefiner[] = [];

  define(fn: MetricDefiner): void {
    if (this.built) fn(promClient(), this.built);
    else this.definers.push(fn);
  }

  /** Whether prom-client was loaded for this registry yet. */
  get isBuilt(): boolean {
    return this.built !== null;
  }

  registry(): Prom.Registry {
    if (!this.built) {
      const prom = promClient();
      const r = new prom.Registry();
      for (const fn of this.definers.splice(0)) fn(prom, r);
      this.built = r;
    }
    return this.built;
  }

  get contentType(): string {
    return this.registry().contentType;
  }

  metrics(): Promise<string> {
    return this.registry().metrics();
  }
}

/** Where a sink registers its metrics: a lazy registry, or (tests, the cluster primary) a built one. */
export type MetricsTarget = LazyRegistry | Prom.Registry;

export function defineMetrics(target: MetricsTarget, fn: MetricDefiner): void {
  if (target instanceof LazyRegistry) target.define(fn);
  else fn(promClient(), target);
}
