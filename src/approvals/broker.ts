import { randomBytes } from 'node:crypto';
import {
  ApprovalError,
  type ApprovalEvent,
  type ApprovalGate,
  type ApproveInput,
  type Grant,
  type HoldOutcome,
  type HoldRequest,
  type PendingApproval,
} from './types.js';

export interface BrokerOptions {
  /** How long one held request waits for a decision (default 60 s); then it is denied. */
  timeoutMs?: number;
  /** Pending approvals per agent (default 10); a new one beyond is denied at once. */
  maxPerAgent?: number;
  /** Pending approvals in total (default 100). */
  maxTotal?: number;
  /** Creates the grant an agent/everyone approval asks for (temporary or always). */
  grants: { add(g: { agent: string | null; host: string; port: number | null; forMs: number | null; always: boolean; by: string; approval: string }): Promise<Grant> };
  /** Called with every queue change (never throws into the broker). */
  onEvent?: (e: ApprovalEvent, isNew: boolean) => void;
}

export const DEFAULT_APPROVAL_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_PER_AGENT = 10;
export const DEFAULT_MAX_TOTAL = 100;
/** A temporary grant without a duration lasts this long. */
export const DEFAULT_GRANT_MS = 3_600_000;
const REMEMBER_DECIDED = 1000;

interface Waiter {
  finish(o: HoldOutcome): void;
}

interface Pending {
  view: PendingApproval;
  key: string;
  waiters: Set<Waiter>;
  /** Set while an approval is being applied (writing a grant), so a second decision gets 409. */
  deciding: boolean;
}

/**
 * Pending approvals, in memory: the proxy's held requests wait here for a person. Identical requests
 * (same agent, host and port) share one approval. Everything that is not an approval ends as a deny:
 * a full queue, a timeout, a client that went away (fail closed).
 */
export class ApprovalBroker implements ApprovalGate {
  private readonly pending = new Map<string, Pending>();
  private readonly byKey = new Map<string, Pending>();
  /** Ids decided recently, so a second decision is 409 (already decided), not 404. */
  private readonly decided = new Map<string, string>();
  private readonly timeoutMs: number;
  private readonly maxPerAgent: number;
  private readonly maxTotal: number;
  private closed = false;

  constructor(private readonly o: BrokerOptions) {
    this.timeoutMs = o.timeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS;
    this.maxPerAgent = o.maxPerAgent ?? DEFAULT_MAX_PER_AGENT;
    this.maxTotal = o.maxTotal ?? DEFAULT_MAX_TOTAL;
  }

  hold(req: HoldRequest, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HoldOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'overflow', limit: 'total' });
    const key = JSON.stringify([req.agent, req.host, req.port]);
    let p = this.byKey.get(key);
    if (!p) {
      if (this.pending.size >= this.maxTotal) return Promise.resolve({ kind: 'overflow', limit: 'total' });
      let mine = 0;
      for (const x of this.pending.values()) if (x.view.agent === req.agent) mine++;
      if (mine >= this.maxPerAgent) return Promise.resolve({ kind: 'overflow', limit: 'agent' });
      const id = newApprovalId();
      p = {
        key,
        waiters: new Set(),
        deciding: false,
        view: {
          id,
          agent: req.agent,
          host: req.host,
          port: req.port,
          method: req.method,
          createdAt: new Date().toISOString(),
          waiting: 0,
          reason: req.rule ? `ask rule ${req.rule}` : 'no rule matched (on_no_match: ask)',
          rule: req.rule,
        },
      };
      this.pending.set(id, p);
      this.byKey.set(key, p);
    }
    const approval = p;
    const fresh = approval.waiters.size === 0;
    return new Promise<HoldOutcome>((resolve) => {
      let done = false;
      const timer = setTimeout(() => leave({ kind: 'timeout', approvalId: approval.view.id }), opts.timeoutMs ?? this.timeoutMs);
      const onAbort = (): void => leave({ kind: 'abandoned', approvalId: approval.view.id });
      const w: Waiter = {
        finish: (o) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          resolve(o);
        },
      };
      // A waiter leaving on its own (timeout, client gone); the last one out ends the approval.
      const leave = (o: HoldOutcome & { kind: 'timeout' | 'abandoned' }): void => {
        if (done) return;
        approval.waiters.delete(w);
        approval.view.waiting = approval.waiters.size;
        w.finish(o);
        if (approval.waiters.size === 0 && !approval.deciding) this.end(approval, { outcome: o.kind });
      };
      approval.waiters.add(w);
      approval.view.waiting = approval.waiters.size;
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      // Every join changes the waiting count the page shows; only a new approval notifies the webhook.
      this.emit({ type: 'pending', approval: { ...approval.view } }, fresh);
    });
  }

  list(): PendingApproval[] {
    return [...this.pending.values()].map((p) => ({ ...p.view })).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** Approve: the requests waiting go through; agent/everyone also creates a grant (validated first). */
  async approve(id: string, d: ApproveInput): Promise<{ grant: Grant | null }> {
    const p = this.open(id);
    const by = d.by?.trim() || 'admin';
    if (d.scope === 'once' && (d.always || d.forMs !== undefined)) throw new ApprovalError(400, 'scope once takes neither "for" nor "always" (it lets the waiting requests through, nothing more)');
    if (d.always && d.forMs !== undefined) throw new ApprovalError(400, 'give "for" or "always", not both');
    if (d.scope === 'agent' && p.view.agent === null) throw new ApprovalError(400, 'the request has no agent (anonymous client): use scope once or everyone');
    let grant: Grant | null = null;
    if (d.scope !== 'once') {
      p.deciding = true;
      try {
        grant = await this.o.grants.add({
          agent: d.scope === 'agent' ? p.view.agent : null,
          host: p.view.host,
          port: p.view.port,
          forMs: d.always ? null : d.forMs ?? DEFAULT_GRANT_MS,
          always: !!d.always,
          by,
          approval: id,
        });
      } catch (err) {
        p.deciding = false;
        if (p.waiters.size === 0) this.end(p, { outcome: 'timeout' });
        if (err instanceof ApprovalError) throw err;
        throw new ApprovalError(500, `cannot write the grant: ${(err as Error).message}`);
      }
    }
    const o: HoldOutcome = { kind: 'approved', approvalId: id, by, scope: d.scope, grant };
    this.end(p, { outcome: 'approved', by, scope: d.scope, grant }, o);
    return { grant };
  }

  deny(id: string, by?: string): void {
    const p = this.open(id);
    const who = by?.trim() || 'admin';
    this.end(p, { outcome: 'denied', by: who }, { kind: 'denied', approvalId: id, by: who });
  }

  /** Shutdown: every held request is denied (the proxy is draining). */
  close(): void {
    this.closed = true;
    for (const p of [...this.pending.values()]) this.end(p, { outcome: 'denied', by: 'shutdown' }, { kind: 'denied', approvalId: p.view.id, by: 'shutdown' });
  }

  private open(id: string): Pending {
    const p = this.pending.get(id);
    if (p && !p.deciding) return p;
    if (p || this.decided.has(id)) throw new ApprovalError(409, `approval ${id} is already decided${this.decided.has(id) ? ` (${this.decided.get(id)})` : ''}`);
    throw new ApprovalError(404, `no pending approval ${id}`);
  }

  private end(p: Pending, result: Omit<NonNullable<ApprovalEvent['approval']>, keyof PendingApproval>, outcome?: HoldOutcome): void {
    if (this.pending.get(p.view.id) !== p) return;
    this.pending.delete(p.view.id);
    this.byKey.delete(p.key);
    this.decided.set(p.view.id, result.outcome ?? 'ended');
    if (this.decided.size > REMEMBER_DECIDED) this.decided.delete(this.decided.keys().next().value as string);
    const view = { ...p.view };
    if (outcome) for (const w of [...p.waiters]) w.finish(outcome);
    p.waiters.clear();
    this.emit({ type: 'resolved', approval: { ...view, ...result } });
  }

  private emit(e: ApprovalEvent, isNew = false): void {
    try {
      this.o.onEvent?.(e, isNew);
    } catch {
      /* a listener must not break the queue */
    }
  }
}

function newApprovalId(): string {
  return `ap_${Date.now().toString(36)}${randomBytes(5).toString('hex')}`;
}
