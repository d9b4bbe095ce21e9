import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';

/** "auto" = one worker per core; a number as given. */
export function parseWorkers(text: string): number {
  if (text === 'auto') return availableParallelism();
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 256) throw new Error(`--workers takes a number from 1 to 256 or "auto", got ${JSON.stringify(text)}`);
  return Number(text);
}

/**
 * Whether this process is a cluster worker. Here rather than in cluster.ts so that a single-process
 * `serve` does not load the cluster runtime (fork, restart, the metrics aggregation). node:cluster
 * itself is cheap and already loaded in a worker: Node sets a worker up at bootstrap and removes
 * NODE_UNIQUE_ID from its environment, so the environment cannot tell.
 */
export function isClusterWorker(): boolean {
  return cluster.isWorker;
}
