import pino from 'pino';
import type { DecisionRecord } from '../../src/decisions/record.js';
import type { DecisionSink } from '../../src/decisions/sink.js';
import { startEgress, type EgressConfig, type RunningEgress } from '../../src/runtime/serve.js';
import { adminTokenPath, readAdminTokenFile } from '../../src/admin/token-file.js';

/** Collects records in memory so tests can assert on exactly what the proxy decided. */
export class MemorySink implements DecisionSink {
  records: DecisionRecord[] = [];
  write(r: DecisionRecord): void {
    this.records.push(structuredClone(r));
  }
  async close(): Promise<void> {}
  /** Wait until a record matching pred arrives (tunnel records land when the tunnel closes). */
  async waitFor(pred: (r: DecisionRecord) => boolean, ms = 5_000): Promise<DecisionRecord> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.records.find(pred);
      if (hit) return hit;
      if (Date.now() > end) throw new Error(`no matching record within ${ms} ms; have: ${JSON.stringify(this.records.map((r) => [r.method, r.host, r.reason]))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

export interface TestProxy {
  url: string;
  port: number;
  sink: MemorySink;
  egress: RunningEgress;
  /** The admin API's base URL and the token it requires (the explicit one, or the one serve generated); null when off. */
  admin: { url: string; token: string | null } | null;
  /** Transparent capture: which listener stands for which captured port (empty without --transparent-listen). */
  transparent: { capturedPort: number; address: string; port: number }[];
  close(): Promise<void>;
}

/** The real proxy, in-process, on an ephemeral loopback port. */
export async function startTestProxy(cfg: Partial<EgressConfig> = {}): Promise<TestProxy> {
  const sink = new MemorySink();
  const egress = await startEgress({
    listen: '127.0.0.1:0',
    flags: { allow: [], deny: [], allowAddress: [] },
    dnsServers: [],
    logFile: null,
    logger: pino({ level: 'silent' }),
    ...cfg,
    sinks: [sink, ...(cfg.sinks ?? [])],
  });
  const port = egress.address.port;
  let admin: TestProxy['admin'] = null;
  if (egress.admin && cfg.admin) {
    const token = cfg.admin.token ?? (cfg.admin.noAuth ? null : readAdminTokenFile(adminTokenPath(cfg.store!.dataDir)));
    admin = { url: `http://127.0.0.1:${egress.admin.port}`, token };
  }
  const transparent = egress.transparent?.bindings ?? [];
  return { url: `http://127.0.0.1:${port}`, port, sink, egress, admin, transparent, close: () => egress.close() };
}
