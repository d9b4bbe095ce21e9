import { afterAll, beforeAll } from 'vitest';
import dgram from 'node:dgram';
import { execFile } from 'node:child_process';
import type { DecisionRecord } from '../../src/decisions/record.js';
import type { DecisionSink } from '../../src/decisions/sink.js';
import { startDnsFilter, type DnsFilterHandle, type DnsFilterOptions } from '../../src/dns/index.js';
import { AddressGuard } from '../../src/net/guard.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { startTestUpstream, type TestUpstream, type Zone } from './upstream-server.js';

export interface DigResult {
  status: string;
  flags: string[];
  answers: { name: string; type: string; data: string }[];
  raw: string;
}

/** Run the real `dig` against the filter. One try, bounded time. */
export function dig(port: number, name: string, type = 'A', extra: string[] = []): Promise<DigResult> {
  const args = ['@127.0.0.1', '-p', String(port), name, type, '+tries=1', '+time=3', '+noall', '+comments', '+answer', ...extra];
  return new Promise((resolve, reject) => {
    execFile('dig', args, { timeout: 15_000 }, (err, stdout) => {
      const status = /status: ([A-Z]+)/.exec(stdout)?.[1];
      if (!status) return reject(new Error(`dig gave no status (${err?.message ?? ''}):\n${stdout}`));
      const flags = (/;; flags: ([a-z ]+);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/);
      const answers = stdout
        .split('\n')
        .filter((l) => l && !l.startsWith(';'))
        .map((l) => l.split(/\s+/))
        .filter((p) => p.length >= 5)
        .map((p) => ({ name: p[0], type: p[3], data: p.slice(4).join(' ') }));
      resolve({ status, flags, answers, raw: stdout });
    });
  });
}

/** Send raw bytes over UDP from a chosen local address; resolve with the reply, or null after waitMs. */
export function rawUdp(port: number, msg: Buffer, opts: { from?: string; waitMs?: number } = {}): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(null);
    }, opts.waitMs ?? 1000);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.bind(0, opts.from ?? '127.0.0.1', () => s.send(msg, port, '127.0.0.1'));
  });
}

export class MemorySink implements DecisionSink {
  readonly records: DecisionRecord[] = [];
  write(r: DecisionRecord): void {
    this.records.push(r);
  }
  async close(): Promise<void> {}
  forHost(host: string): DecisionRecord[] {
    return this.records.filter((r) => r.host === host);
  }
}

/** A real filter on 127.0.0.1:0 in front of a real test upstream answering `zone`, judged by `policyYaml`. */
export async function startFilterWithUpstream(
  zone: Zone,
  policyYaml: string,
  opts: Partial<DnsFilterOptions> = {},
): Promise<{ upstream: TestUpstream; filter: DnsFilterHandle; sink: MemorySink; close(): Promise<void> }> {
  const upstream = await startTestUpstream(zone);
  const policy = compilePolicy(parsePolicyText(policyYaml, 'test.yaml'));
  const guard = new AddressGuard({});
  const sink = new MemorySink();
  const filter = await startDnsFilter({
    listen: '127.0.0.1:0',
    upstreams: [`127.0.0.1:${upstream.port}`],
    policy: () => policy,
    guard: () => guard,
    sink,
    upstreamTimeoutMs: 2000,
    ...opts,
  });
  return {
    upstream,
    filter,
    sink,
    close: async () => {
      await filter.close();
      await upstream.close();
    },
  };
}

/** startFilterWithUpstream for a whole test file: started before its tests, closed after them. */
export function useFilter(zone: Zone, policyYaml: string, opts: Partial<DnsFilterOptions> = {}): Awaited<ReturnType<typeof startFilterWithUpstream>> {
  const env = {} as Awaited<ReturnType<typeof startFilterWithUpstream>>;
  beforeAll(async () => {
    Object.assign(env, await startFilterWithUpstream(zone, policyYaml, opts));
  });
  afterAll(async () => {
    await env.close?.();
  });
  return env;
}
