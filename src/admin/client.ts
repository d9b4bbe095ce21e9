// undici is loaded by the `log --url` commands that use this client, not by every command that links it.
const request: typeof import('undici').request = async (...args) => (await import('undici')).request(...args);
import type { DecisionRecord } from '../decisions/record.js';
import type { RawFilter } from '../decisions/query.js';
import type { QueryPage } from '../decisions/store/types.js';
import type { Summary } from '../decisions/summary.js';
import { AdminTokenError, findAdminToken } from './token-file.js';

export class AdminClientError extends Error {
  override name = 'AdminClientError';
}

/**
 * A client with the token the operator means: --token, else $AGENT_EGRESS_ADMIN_TOKEN, else the
 * token serve generated in the data dir (readable only by serve's user: anyone else gets 401).
 */
export function adminClientFor(o: { url: string; token?: string; dataDir?: string }): AdminClient {
  let token = o.token ?? process.env.AGENT_EGRESS_ADMIN_TOKEN;
  if (!token) {
    try {
      token = findAdminToken(o.dataDir ?? './data') ?? undefined;
    } catch (err) {
      if (err instanceof AdminTokenError) throw new AdminClientError(err.message);
      throw err;
    }
  }
  return new AdminClient(o.url, token);
}

/** The CLI's way to the admin API (`--url`), for when the store file is not on this machine. */
export class AdminClient {
  private readonly base: string;
  constructor(
    url: string,
    private readonly token?: string,
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  private headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  private async getJson<T>(path: string, params: Record<string, string | number | undefined>): Promise<T> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
    return this.send<T>(`${path}?${q}`);
  }

  /** POST a JSON body (the admin API refuses state changes that are not JSON). */
  postJson<T>(path: string, body: unknown): Promise<T> {
    return this.send<T>(path, JSON.stringify(body ?? {}));
  }

  private async send<T>(path: string, body?: string): Promise<T> {
    const headers = body === undefined ? this.headers() : { ...this.headers(), 'content-type': 'application/json' };
    const res = await request(`${this.base}${path}`, { method: body === undefined ? 'GET' : 'POST', body, headers, headersTimeout: 30_000, bodyTimeout: 30_000 });
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      let msg = text;
      try {
        msg = (JSON.parse(text) as { message?: string }).message ?? text;
      } catch {
        /* not JSON */
      }
      throw new AdminClientError(`admin API ${res.statusCode}: ${msg}`);
    }
    return JSON.parse(text) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.send<T>(path);
  }

  query(f: RawFilter): Promise<QueryPage> {
    return this.getJson('/api/decisions', { ...f });
  }

  summary(f: RawFilter): Promise<Summary> {
    const { limit: _l, cursor: _c, ...rest } = f;
    return this.getJson('/api/decisions/summary', rest);
  }

  /** Follow the SSE stream until `signal` aborts. */
  async stream(f: RawFilter, onRecord: (r: DecisionRecord) => void, signal: AbortSignal): Promise<void> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v !== undefined && k !== 'limit' && k !== 'cursor') q.set(k, String(v));
    const res = await request(`${this.base}/api/decisions/stream?${q}`, { headers: this.headers(), signal, bodyTimeout: 0 });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new AdminClientError(`admin API ${res.statusCode}: ${text}`);
    }
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += chunk.toString();
        let end: number;
        while ((end = buf.indexOf('\n\n')) !== -1) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const lines = event.split('\n');
          // Other event types share the stream (approval queue changes): only decisions are records.
          const type = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'decision';
          if (type !== 'decision') continue;
          const data = lines
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          if (data) onRecord(JSON.parse(data) as DecisionRecord);
        }
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  }
}
