import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Who a request acts as: the admin token's holder, or a read-only viewer. */
export type Role = 'admin' | 'viewer';

export interface Session {
  id: string;
  role: Role;
  /** Sent back in X-CSRF-Token with every state-changing request made with this session's cookie. */
  csrf: string;
  createdAt: number;
  expiresAt: number;
  lastSeen: number;
}

export interface SessionOptions {
  /** Absolute lifetime of a session. Default 12 h. */
  ttlMs?: number;
  /** A session unused this long ends. Default 2 h. */
  idleMs?: number;
  /** Sessions kept at once; the oldest is dropped beyond. Default 1000. */
  max?: number;
  now?: () => number;
}

export const SESSION_COOKIE = 'agent_egress_session';
export const CSRF_HEADER = 'x-csrf-token';

/**
 * Server-side sessions for the dashboard. The cookie holds only a random id (32 bytes); the role and
 * the CSRF token live here, in memory, so a restart signs everybody out and a stolen id dies with its
 * expiry. The id is looked up by its hash, so timing on the map never depends on a secret's prefix.
 */
export class SessionStore {
  private readonly byKey = new Map<string, Session>();
  private readonly o: Required<Omit<SessionOptions, 'now'>>;
  private readonly now: () => number;

  constructor(opts: SessionOptions = {}) {
    this.o = { ttlMs: opts.ttlMs ?? 12 * 3_600_000, idleMs: opts.idleMs ?? 2 * 3_600_000, max: opts.max ?? 1000 };
    this.now = opts.now ?? Date.now;
  }

  create(role: Role): Session {
    const now = this.now();
    this.sweep(now);
    while (this.byKey.size >= this.o.max) this.byKey.delete(this.byKey.keys().next().value as string);
    const s: Session = { id: randomBytes(32).toString('base64url'), role, csrf: randomBytes(32).toString('base64url'), createdAt: now, expiresAt: now + this.o.ttlMs, lastSeen: now };
    this.byKey.set(key(s.id), s);
    return s;
  }

  /** The live session for a cookie value, refreshed; null when unknown, expired or idle too long. */
  get(id: string | undefined): Session | null {
    if (!id || id.length > 100) return null;
    const k = key(id);
    const s = this.byKey.get(k);
    if (!s) return null;
    const now = this.now();
    if (now >= s.expiresAt || now - s.lastSeen >= this.o.idleMs) {
      this.byKey.delete(k);
      return null;
    }
    s.lastSeen = now;
    return s;
  }

  delete(id: string): void {
    this.byKey.delete(key(id));
  }

  get size(): number {
    return this.byKey.size;
  }

  private sweep(now: number): void {
    for (const [k, s] of this.byKey) if (now >= s.expiresAt || now - s.lastSeen >= this.o.idleMs) this.byKey.delete(k);
  }
}

function key(id: string): string {
  return createHash('sha256').update(id).digest('base64url');
}

/** Constant-time string comparison (both hashed, so lengths do not leak). */
export function secretEquals(given: string | undefined, want: string): boolean {
  const a = createHash('sha256').update(given ?? '').digest();
  const b = createHash('sha256').update(want).digest();
  return timingSafeEqual(a, b) && given !== undefined;
}

/** The value of one cookie from a Cookie header; undefined when absent or given twice (ambiguous). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  let found: string | undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    if (found !== undefined) return undefined;
    found = part.slice(eq + 1).trim();
  }
  return found;
}

/** Set-Cookie for a session: HttpOnly, SameSite=Strict, Path=/, Secure when the page came over TLS. */
export function sessionCookie(s: Session, secure: boolean, now = Date.now()): string {
  const maxAge = Math.max(0, Math.floor((s.expiresAt - now) / 1000));
  return `${SESSION_COOKIE}=${s.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? '; Secure' : ''}`;
}

export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`;
}
