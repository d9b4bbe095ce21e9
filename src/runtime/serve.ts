import { readFileSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { JsonLinesSink } from '../decisions/json-sink.js';
import { FanoutSink, type DecisionSink } from '../decisions/sink.js';
import { AddressGuard } from '../net/guard.js';
import { createResolver } from '../net/resolve.js';
import type { PolicyFlags } from '../policy/index.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { ProxyLimits } from '../proxy/options.js';
import { ProxyServer } from '../proxy/server.js';
import type { VetContext } from '../proxy/vet.js';
import { formatListen, isLoopback, parseListen } from './listen.js';
import { FilePolicyHolder } from './policy-holder.js';

export interface EgressConfig {
  listen: string;
  policyFile?: string;
  flags: PolicyFlags;
  dnsServers: string[];
  /** JSON-lines decision log: a path, or undefined for stdout, or null for none (tests, benchmarks). */
  logFile?: string | null;
  logQuery?: boolean;
  limits?: Partial<ProxyLimits>;
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** Poll the policy file for changes (ms); 0 disables. */
  watchMs?: number;
  /** Extra sinks (tests; the store and alerts are added here by serve). */
  sinks?: DecisionSink[];
  logger?: Logger;
}

export interface RunningEgress {
  proxy: ProxyServer;
  address: { address: string; port: number };
  holder: FilePolicyHolder;
  sink: FanoutSink;
  logger: Logger;
  context(): VetContext;
  close(): Promise<void>;
}

/** Assemble and start: policy, guard, resolver, sinks, proxy listener. Throws (before listening) on bad config. */
export async function startEgress(cfg: EgressConfig): Promise<RunningEgress> {
  const logger = cfg.logger ?? pino({ level: 'info' }, pino.destination(2));
  const listen = parseListen(cfg.listen);
  const holder = new FilePolicyHolder(cfg.policyFile, cfg.flags, (e) => {
    if (e.ok) logger.info({ trigger: e.trigger, policyHash: e.hash }, 'policy reloaded');
    else logger.error({ trigger: e.trigger, error: e.error }, 'policy reload failed; keeping the running policy');
  });
  for (const w of (holder.current() as CompiledPolicy & { warnings?: string[] }).warnings ?? []) logger.warn(w);

  const resolver = createResolver({ servers: cfg.dnsServers.length ? cfg.dnsServers : undefined, timeoutMs: cfg.limits?.dnsTimeoutMs ?? 5_000 });
  const self: { address: string; port: number }[] = [];
  const makeContext = (policy: CompiledPolicy): VetContext => ({
    policy,
    guard: new AddressGuard({ exempt: policy.spec.guardExempt, self }),
    resolver,
  });
  let ctx = makeContext(holder.current());
  holder.onChange((p) => {
    ctx = makeContext(p);
  });

  const sinks: DecisionSink[] = [...(cfg.sinks ?? [])];
  if (cfg.logFile !== null) sinks.unshift(new JsonLinesSink(cfg.logFile));
  const sink = new FanoutSink(sinks);

  let tls: ConstructorParameters<typeof ProxyServer>[0]['tls'];
  if (cfg.tls) {
    tls = {
      cert: readFileSync(cfg.tls.certFile),
      key: readFileSync(cfg.tls.keyFile),
      clientCa: cfg.tls.clientCaFile ? readFileSync(cfg.tls.clientCaFile) : undefined,
    };
  }
  const proxy = new ProxyServer({ context: () => ctx, sink, logger, limits: cfg.limits, record: { logQuery: cfg.logQuery ?? false }, tls });
  const address = await proxy.listen(listen.host, listen.port);
  // The guard refuses the proxy's own listener even where a range exemption would let its address through.
  self.push({ address: address.address, port: address.port });
  ctx = makeContext(holder.current());

  const policy = holder.current().spec;
  if (!isLoopback(listen.host) && !policy.requireAuth && !cfg.tls?.clientCaFile) {
    logger.warn(
      { listen: formatListen(address) },
      'LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT REQUIRED CREDENTIALS: anyone who can reach this port can use the proxy; set require_auth: true in the policy or use --client-ca',
    );
  }
  if (cfg.watchMs && cfg.policyFile) holder.watch(cfg.watchMs);

  let closing: Promise<void> | null = null;
  return {
    proxy,
    address,
    holder,
    sink,
    logger,
    context: () => ctx,
    close() {
      closing ??= (async () => {
        holder.close();
        await proxy.close();
        await sink.close();
      })();
      return closing;
    },
  };
}
