import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, type PrometheusContentType, type Registry } from 'prom-client';
import type { AdminServer } from '../admin/server.js';
import { startLazyAdmin } from './lazy-admin.js';
import { logAdminAuth, resolveAdminAuth } from '../admin/token-file.js';
import { openStoreForAdmin } from '../decisions/store/index.js';
import type { PolicyHolder, PolicyState } from '../policy/holder.js';
import type { CompiledPolicy } from '../policy/types.js';
import { formatListen, parseListen } from './listen.js';
import { FilePolicyHolder } from './policy-holder.js';
import type { EgressConfig, RunningEgress } from './serve.js';

const RELOAD = 'agent-egress:reload';
/** Worker -> primary: the proxy (and DNS) listeners are up. */
const LISTENING = 'agent-egress:listening';
/** Worker -> primary: start-up failed, with the one-line cause. */
const START_FAILED = 'agent-egress:start-failed';

/** Restarts after a crash wait this long, doubling per crash in the window, up to the max. */
const RESTART_DELAY_MS = 500;
const RESTART_DELAY_MAX_MS = 10_000;
/** This many worker crashes within the window: the primary gives up instead of looping. */
const CRASH_LIMIT = 5;
const CRASH_WINDOW_MS = 60_000;
const ADMIN_ENV = 'AGENT_EGRESS_CLUSTER_ADMIN';


/**
 * In a worker: the primary serves the admin API, so the worker runs none, but still refuses to reach
 * the primary's admin listener (the guard's self list).
 */
export function workerConfig(cfg: EgressConfig): EgressConfig {
  const admin = process.env[ADMIN_ENV];
  const self = admin ? [parseAdmin(admin)] : [];
  const slot = process.env[SLOT_ENV];
  // Each worker is its own writer: in a shared store, its own replica (and chain) under the process's name.
  const store = cfg.store && cfg.store.location?.kind === 'postgres' && slot ? { ...cfg.store, replica: `${cfg.store.replica}-w${slot}` } : cfg.store;
  return { ...cfg, store, admin: null, guardSelf: [...(cfg.guardSelf ?? []), ...self] };
}

const SLOT_ENV = 'AGENT_EGRESS_WORKER_SLOT';


function parseAdmin(text: string): { address: string; port: number } {
  const l = parseListen(text);
  return { address: l.host, port: l.port };
}

/** Worker side after start: metrics reach the primary's /metrics, and reloads come from the primary. */
export function attachWorker(running: RunningEgress): void {
  process.send?.(LISTENING);
  AggregatorRegistry.setRegistries([running.metrics as Registry]);
  // prom-client answers the primary's metric requests only once an AggregatorRegistry was constructed here.
  new AggregatorRegistry();
  process.on('message', (m) => {
    if (m === RELOAD) void running.holder.reload('signal');
  });
}

/**
 * Worker side when start-up fails: tell the primary the cause, so that it prints one line for all
 * workers instead of each worker printing its own. Resolves once the message is sent.
 */
export function reportWorkerStartFailure(message: string): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send({ type: START_FAILED, message: message.replace(/\s*\n\s*/g, '; ') }, undefined, {}, () => resolve());
  });
}

/** The primary of a cluster that cannot run: its one-line cause and the exit code. */
export class ClusterStartError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'ClusterStartError';
  }
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
 * relays SIGHUP, and on SIGTERM/SIGINT lets every worker drain and exits 0. /readyz is true only while a
 * worker listens. If an initial worker cannot start, everything stops with its cause (exit 2); a worker
 * that dies later is re-forked after a doubling delay, and after CRASH_LIMIT deaths within
 * CRASH_WINDOW_MS the primary gives up (exit 1) rather than loop.
 */
export async function runPrimary(cfg: EgressConfig, workers: number, logger: Logger): Promise<void> {
  const holder = new FilePolicyHolder(cfg.policyFile, cfg.flags, (e) => {
    if (!e.ok) logger.error({ trigger: e.trigger, error: e.error }, 'policy reload failed; keeping the running policy');
  }, { inspectCa: !!cfg.inspect?.caFile, settleMs: cfg.policySettleMs });
  const live = new Set<Worker>();
  // Ready only while a worker is actually listening, not merely forked.
  const listening = new Set<Worker>();
  const broadcast = () => {
    for (const w of live) w.send(RELOAD);
  };
  const policy = new ClusterPolicyHolder(holder, broadcast);

  let admin: AdminServer | null = null;
  const store = cfg.store
    ? await openStoreForAdmin({ location: cfg.store.location, dataDir: cfg.store.dataDir, logger })
    : null;
  if (cfg.admin && store) {
    const aggregate = new AggregatorRegistry<PrometheusContentType>();
    aggregate.metrics = () => aggregate.clusterMetrics();
    // Generated (or read) once, here: workers run no admin API and never see the token.
    const auth = resolveAdminAuth(cfg.admin, cfg.store!.dataDir);
    admin = await startLazyAdmin({
      listen: cfg.admin.listen,
      token: auth.token,
      viewerToken: cfg.admin.viewerToken,
      open: auth.open,
      metricsAuth: cfg.admin.metricsAuth,
      hosts: cfg.admin.hosts,
      store,
      policy,
      metricsRegistry: aggregate,
      ready: () => listening.size > 0,
      logger,
    });
    logAdminAuth(auth, logger);
  }

  let stopping = false;
  let started = false; // every initial worker has listened once
  const crashes: number[] = [];
  let failure: ClusterStartError | null = null;
  // A cluster that cannot run ends the process: the remaining workers drain, then one line with the
  // cause and a non-zero exit (a supervisor restarts the whole thing, instead of a silent fork loop).
  const fail = (e: ClusterStartError) => {
    if (failure || stopping) return;
    failure = e;
    void drain()
      .catch(() => {})
      .then(() => {
        logger.flush?.();
        process.stderr.write(`agent-egress: ${e.message}\n`);
        process.exit(e.exitCode);
      });
  };

  const env = admin ? { [ADMIN_ENV]: formatListen(admin) } : {};
  // A slot outlives its worker: a re-forked worker writes as the same replica (and finds its spool).
  const fork = (slot: number) => {
    const w = cluster.fork({ ...env, [SLOT_ENV]: String(slot) });
    let cause: string | null = null;
    live.add(w);
    w.on('message', (m: unknown) => {
      if (m === LISTENING) {
        listening.add(w);
        if (!started && listening.size === workers) {
          started = true;
          logger.info({ workers }, 'all workers listening');
        }
      } else if (m && typeof m === 'object' && (m as { type?: unknown }).type === START_FAILED) {
        cause = String((m as { message?: unknown }).message);
      }
    });
    w.once('exit', (code, signal) => {
      const wasListening = listening.delete(w);
      live.delete(w);
      if (stopping || failure) return;
      if (!started && !wasListening) {
        // An initial worker could not start (port taken, bad certificate, ...): the others would fail
        // the same way. Never run half-started and never loop: stop and say why, once.
        fail(new ClusterStartError(`cannot start: ${cause ?? `worker exited with ${signal ?? `code ${code}`} before listening`}`, 2));
        return;
      }
      const now = Date.now();
      crashes.push(now);
      while (crashes.length && crashes[0] <= now - CRASH_WINDOW_MS) crashes.shift();
      if (crashes.length >= CRASH_LIMIT) {
        fail(new ClusterStartError(`workers exited ${crashes.length} times within ${CRASH_WINDOW_MS / 1000} s (last: ${cause ?? signal ?? `code ${code}`}); giving up`, 1));
        return;
      }
      const delay = Math.min(RESTART_DELAY_MAX_MS, RESTART_DELAY_MS * 2 ** (crashes.length - 1));
      logger.error({ worker: w.id, code, signal, cause, restartInMs: delay }, 'worker exited; starting another');
      setTimeout(() => {
        if (!stopping && !failure) fork(slot);
      }, delay).unref();
    });
  };
  for (let i = 0; i < workers; i++) fork(i + 1);
  if (cfg.watchMs && cfg.policyFile) holder.watch(cfg.watchMs);
  logger.info({ workers, admin: admin ? formatListen(admin) : null }, 'agent-egress primary started workers');

  process.on('SIGHUP', () => void policy.reload('signal'));
  const drain = async () => {
    const exits = [...live].map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
    for (const w of live) w.process.kill('SIGTERM');
    await Promise.all(exits);
    holder.close();
    await admin?.close();
    await store?.close();
  };
  const stop = async (signal: string) => {
    if (stopping || failure) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: workers drain in-flight work');
    await drain();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
