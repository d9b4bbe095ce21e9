/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy's own: never forwarded in either direction.
 * Upgrade is listed, so the upgrade path re-adds the two headers it needs on purpose.
 */
const HOP = new Set([
  'connection',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  // undici refuses Expect; Node's server has already answered 100-continue to the client.
  'expect',
]);

/** Names the Connection header lists are hop-by-hop too. */
function connectionTokens(raw: string[]): Set<string> | null {
  let set: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 10 && raw[i].toLowerCase() === 'connection') {
      for (const t of raw[i + 1].split(',')) {
        const name = t.trim().toLowerCase();
        if (name) (set ??= new Set()).add(name);
      }
    }
  }
  return set;
}

/** Request headers to send upstream, as a flat [name, value, …] list (keeps duplicates and order). */
export function forwardRequestHeaders(raw: string[], host: string): string[] {
  const drop = connectionTokens(raw);
  const out: string[] = ['host', host];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (HOP.has(lower) || drop?.has(lower)) continue;
    out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** Response headers from undici (lower-case keys; arrays for repeats) minus hop-by-hop ones. */
export function forwardResponseHeaders(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const conn = h.connection;
  let drop: Set<string> | null = null;
  if (conn) {
    const c = String(conn).toLowerCase();
    // Nearly every answer says just keep-alive or close, both hop-by-hop already: no set to build.
    if (c !== 'keep-alive' && c !== 'close') drop = new Set(c.split(',').map((t) => t.trim()));
  }
  const out: Record<string, string | string[]> = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || HOP.has(k) || drop?.has(k)) continue;
    out[k] = v;
  }
  return out;
}
