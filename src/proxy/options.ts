/** Limits and timeouts on every phase. Defaults are documented in README (Configuration) and `serve --help`. */
export interface ProxyLimits {
  /** Max bytes of request line + headers (Node's maxHeaderSize). */
  maxHeaderBytes: number;
  /** Time allowed to receive a complete request head (slowloris guard). */
  headersTimeoutMs: number;
  /** Name resolution deadline. */
  dnsTimeoutMs: number;
  /** Upstream TCP connect deadline (per address tried). */
  connectTimeoutMs: number;
  /** A tunnel with no bytes either way for this long is closed. */
  tunnelIdleMs: number;
  /** Plain HTTP: upstream silent this long (waiting for headers or between body chunks) -> 504 / abort. */
  requestIdleMs: number;
  /** How long an idle client keep-alive connection is kept open. */
  keepAliveMs: number;
  /** Concurrent client connections from one address. */
  maxConnectionsPerClient: number;
  /** Concurrent client connections in total. */
  maxConnections: number;
  /** On SIGTERM/SIGINT: how long in-flight work may drain before it is cut. */
  shutdownGraceMs: number;
}

export const DEFAULT_LIMITS: ProxyLimits = {
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 10_000,
  dnsTimeoutMs: 5_000,
  connectTimeoutMs: 10_000,
  tunnelIdleMs: 300_000,
  requestIdleMs: 60_000,
  keepAliveMs: 30_000,
  maxConnectionsPerClient: 256,
  maxConnections: 4096,
  shutdownGraceMs: 10_000,
};

/**
 * Socket buffer watermark for client and upstream sockets. libuv reads 64 KiB at a time; at Node's 16 KiB
 * default every such chunk makes pipe() pause the reader and wait for 'drain', so bulk tunnels spend
 * their CPU on stop/start cycles. 128 KiB lets one chunk be in flight without pausing, while keeping
 * what a slow reader can make the proxy hold per direction small and bounded.
 */
export const SOCKET_HIGH_WATER_MARK = 128 * 1024;

export interface RecordOptions {
  /** Keep the query string in recorded paths (off by default: queries carry tokens). */
  logQuery: boolean;
}
