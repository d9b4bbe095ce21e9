import type { TLSSocket } from 'node:tls';
import type { Pool } from 'undici';
import { connectUpstreamTls } from './upstream.js';

/** Idle upstream connections are kept this long (and within undici's keep-alive rules) for the next tunnel. */
const KEEP_ALIVE_MS = 4_000;
/** Origins with a pool at once; the least recently used pool beyond is forgotten. */
const MAX_POOLS = 256;

/** Where one pool's connections go: one vetted address, one port, one verified name, one agent. */
export interface UpstreamKey {
  agent: string | null;
  address: string;
  port: number;
  name: string;
  isIp: boolean;
}

interface Entry {
  pool: Pool;
  /** Verified connections opened before a tunnel's 200, handed to the pool's next connect. */
  spares: TLSSocket[];
}

/**
 * Upstream connections of inspected tunnels, pooled per (agent, vetted address, port, name), so a new
 * inspected tunnel to an origin reuses a verified connection instead of a TLS handshake, and requests
 * in an open tunnel reuse one as plain-HTTP forwarding does. Every connection in a pool was dialled to
 * that vetted address with SNI = that name and its certificate verified (connectUpstreamTls); a pool is
 * never shared between agents, nor between names or addresses.
 */
export class UpstreamPools {
  private readonly pools = new Map<string, Entry>();

  constructor(
    private readonly PoolClass: typeof Pool,
    private readonly ca: readonly string[],
    private readonly limits: { connectTimeoutMs: number; requestIdleMs: number },
  ) {}

  /** A pool with an idle verified connection for this key, or null (the caller then dials first). */
  warm(k: UpstreamKey): Pool | null {
    const e = this.pools.get(keyOf(k));
    return e !== undefined && usable(e.pool) && (e.pool.stats.free > 0 || e.spares.length > 0) ? e.pool : null;
  }

  /** The pool for this key; `spare` (a connection just dialled and verified for it) is used first. */
  take(k: UpstreamKey, spare: TLSSocket | null): Pool {
    const key = keyOf(k);
    let e = this.pools.get(key);
    if (e === undefined || !usable(e.pool)) {
      e = this.create(k);
      this.pools.set(key, e);
      while (this.pools.size > MAX_POOLS) {
        const [oldKey, old] = this.pools.entries().next().value as [string, Entry];
        this.drop(oldKey, old);
      }
    } else {
      // Refresh its place in the LRU order.
      this.pools.delete(key);
      this.pools.set(key, e);
    }
    if (spare !== null) {
      const entry = e;
      spare.unref();
      entry.spares.push(spare);
      // A spare the pool never needed (it had a free connection) is closed after the keep-alive time.
      const t = setTimeout(() => {
        const i = entry.spares.indexOf(spare);
        if (i !== -1) entry.spares.splice(i, 1);
        if (i !== -1) spare.destroy();
      }, KEEP_ALIVE_MS);
      t.unref();
      spare.once('close', () => clearTimeout(t));
    }
    return e.pool;
  }

  private create(k: UpstreamKey): Entry {
    const host = k.isIp && k.name.includes(':') ? `[${k.name}]` : k.name;
    const entry: Entry = { pool: null as unknown as Pool, spares: [] };
    entry.pool = new this.PoolClass(`https://${host}:${k.port}`, {
      pipelining: 1,
      keepAliveTimeout: KEEP_ALIVE_MS,
      keepAliveMaxTimeout: KEEP_ALIVE_MS,
      headersTimeout: this.limits.requestIdleMs,
      bodyTimeout: this.limits.requestIdleMs,
      connect: (_opts, cb) => {
        let s: TLSSocket | undefined;
        while ((s = entry.spares.shift()) !== undefined && s.destroyed);
        if (s !== undefined) {
          const socket = s;
          // Never call back synchronously: undici's client is still inside its connect step and stalls.
          process.nextTick(() => cb(null, socket));
          return;
        }
        connectUpstreamTls([k.address], k.port, k.name, k.isIp, this.ca, this.limits.connectTimeoutMs).then(
          (c) => {
            // An idle pooled connection must not hold the process open at shutdown.
            c.socket.unref();
            cb(null, c.socket);
          },
          (err: Error) => cb(err, null),
        );
      },
    });
    return entry;
  }

  /**
   * Forget a pool: tunnels still holding it keep using it, and its idle connections close after the
   * keep-alive time (closing it here would fail their next requests).
   */
  private drop(key: string, e: Entry): void {
    this.pools.delete(key);
    for (const s of e.spares.splice(0)) s.destroy();
  }
}

const usable = (p: Pool): boolean => !p.destroyed && !p.closed;

function keyOf(k: UpstreamKey): string {
  // NUL cannot occur in an agent name, an address or a host name.
  return `${k.agent ?? ''}\0${k.address}\0${k.port}\0${k.name}`;
}
