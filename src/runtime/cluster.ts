import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { AggregatorRegistry, type PrometheusContentType, type Registry } from 'prom-client';
import { startAdminServer, type AdminServer } from '../admin/server.js';
import { createSqliteStore } from '../decisions/store/index.js';
import type { PolicyHolder, PolicyState } from '../policy/holder.js';
import type { CompiledPolicy } from '../policy/types.js';
import { formatListen, parseListen } from './listen.js';
import { FilePolicyHolder } from './policy-holder.js';
import type { EgressConfig, RunningEgress } from './serve.js';

const RELOAD = 'agent-egress:reload';
const ADMIN_ENV = 'AGENT_EGRESS_CLUSTER_ADMIN';

/** "auto" = one worker per core; a number as given. */
export function parseWorkers(text: string): number {
  if (text === 'auto') return availableParallelism();
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 256) throw new Error(`--workers takes a number from 1 to 256 or "auto", got ${JSON.stringify(text)}`);
  return Number(text);
}

export function isClusterWorker(): boolean {
  return cluster.isWorker;
}

/**
 * In a worker: the primary serves the admin API, so the worker runs none, but still refuses to reach
 * the primary's admin listener (the guard's self list).
 */
export function workerConfig(cfg: EgressConfig): EgressConfig {
  const admin = process.env[ADMIN_ENV];
  const self = admin ? [parseAdmin(admin)] : [];
  return { ...cfg, admin: null, guardSelf: [...(cfg.guardSelf ?? []), ...self] };
}

function parseAdmin(text: string): { address: string; port: number } {
  const l = parseListen(text);
  return { address: l.host, port: l.port };
}

/** Worker side after start: metrics reach the primary's /metrics, and reloads come from the primary. */
export function attachWorker(running: RunningEgress): void {
  AggregatorRegistry.setRegistries([running.metrics as Registry]);
  // prom-client answers the primary's metric requests only once an AggregatorRegistry was constructed here.
  new AggregatorRegistry();
  process.on('message', (m) => {
    if (m === RELOAD) void running.holder.reload('signal');
  });
}

/** The primary's view of the policy: its own validated copy, and a reload that reaches every worker. */
class ClusterPolicyHolder implements PolicyHolder {
  constructor(
    private readonly inner: FilePolicyHolder,
    private readonly broadcast: () => void,
  ) {}
  current(): CompiledPolicy {
    return this.inner.current();
  }
  state(): PolicyState {
    return this.inner.state();
  }
  onChange(fn: (p: CompiledPolicy) => void): void {
    this.inner.onChange(fn);
  }
  async reload(trigger: 'file' | 'signal' | 'api') {
    const r = await this.inner.reload(trigger);
    // Workers validate again themselves; a file that failed here fails there too and changes nothing.
    if (r.ok) this.broadcast();
    return r;
  }
}

/**
 * The primary of `serve --workers N`: validates the policy, runs the admin API (queries the shared
 * store, aggregates the workers' metrics), forks N workers that share the proxy (and DNS) listeners,
 * relays SIGHUP, re-forks a worker that dies, and on SIGTERM/SIGINT lets every worker drain and exits 0.
 */
export async function runPrimary(cfg: EgressConfig, workers: number, logger: Logger): Promise<void> {
  const holder = new FilePolicyHolder(cfg.policyFile, cfg.flags, (e) => {
    if (!e.ok) logger.error({ trigger: e.trigger, error: e.error }, 'policy reload failed; keeping the running policy');
  }, { inspectCa: !!cfg.inspect?.caFile });
  const live = new Set<Worker>();
  const broadcast = () => {
    for (const w of live) w.send(RELOAD);
  };
  const policy = new ClusterPolicyHolder(holder, broadcast);

  let admin: AdminServer | null = null;
  const store = cfg.store ? createSqliteStore({ dataDir: cfg.store.dataDir, logger }) : null;
  if (cfg.admin && store) {
    const aggregate = new AggregatorRegistry<PrometheusContentType>();
    aggregate.metrics = () => aggregate.clusterMetrics();
    admin = await startAdminServer({ listen: cfg.admin.listen, token: cfg.admin.token, store, policy, metricsRegistry: aggregate, ready: () => live.size > 0, logger });
  }

  let stopping = false;
  const env = admin ? { [ADMIN_ENV]: formatListen(admin) } : {};
  const fork = () => {
    const w = cluster.fork(env);
    live.add(w);
    w.once('exit', (code, signal) => {
      live.delete(w);
      if (stopping) return;
      logger.error({ worker: w.id, code, signal }, 'worker exited; starting another');
      // A worker that cannot start at all (port taken, bad config) must not become a fork loop.
      setTimeout(fork, 1_000).unref();
    });
  };
  for (let i = 0; i < workers; i++) fork();
  if (cfg.watchMs && cfg.policyFile) holder.watch(cfg.watchMs);
  logger.info({ workers, admin: admin ? formatListen(admin) : null }, 'agent-egress primary started workers');

  process.on('SIGHUP', () => void policy.reload('signal'));
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: workers drain in-flight work');
    const exits = [...live].map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
    for (const w of live) w.process.kill('SIGTERM');
    await Promise.all(exits);
    holder.close();
    await admin?.close();
    await store?.close();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
