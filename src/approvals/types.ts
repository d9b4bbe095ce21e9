/**
 * The contracts of the approvals module: what the proxy and the DNS filter hold a request on, what the
 * admin API and the CLI see of a pending approval and of a grant.
 */

/** Who wants to go where: the key identical requests share one approval by (agent, host, port). */
export interface HoldRequest {
  agent: string | null;
  host: string;
  /** null for a DNS query (ports do not apply). */
  port: number | null;
  /** CONNECT, GET, …, DNS: the first request's, shown to the approver. */
  method: string;
  /** The ask rule that matched, or null for on_no_match: ask. */
  rule: string | null;
}

export type Scope = 'once' | 'agent' | 'everyone';

/** How a held request ended. */
export type HoldOutcome =
  | { kind: 'approved'; approvalId: string; by: string; scope: Scope; grant: Grant | null }
  | { kind: 'denied'; approvalId: string; by: string }
  | { kind: 'timeout'; approvalId: string }
  /** The pending-approval bound (per agent or in total) was full: refused without asking. */
  | { kind: 'overflow'; limit: 'agent' | 'total' }
  /** The client went away while it waited. */
  | { kind: 'abandoned'; approvalId: string };

/** What the proxy and the DNS filter hold a request on. */
export interface ApprovalGate {
  hold(req: HoldRequest, opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<HoldOutcome>;
}

/** A pending approval as the API shows it. */
export interface PendingApproval {
  id: string;
  agent: string | null;
  host: string;
  port: number | null;
  method: string;
  /** ISO time the first request arrived. */
  createdAt: string;
  /** Requests held on it now. */
  waiting: number;
  /** Why it asks, in words: "ask rule NAME" or "no rule matched (on_no_match: ask)". */
  reason: string;
  rule: string | null;
}

/** A grant: an allow rule created by an approval (temporary, in memory) or written to the grants file (always). */
export interface Grant {
  id: string;
  /** null = everyone. */
  agent: string | null;
  host: string;
  /** null = the allow default (443); a grant from a DNS query, which has no port. */
  port: number | null;
  /** ISO, or null for an always grant. */
  expiresAt: string | null;
  always: boolean;
  by: string;
  createdAt: string;
  /** The approval that created it, when there was one. */
  approval?: string | null;
  /** The rule name its later uses carry in their records: grant:<id>. */
  rule: string;
}

/** A decision on a pending approval. */
export interface ApproveInput {
  scope: Scope;
  /** For agent/everyone: a temporary grant for this long. */
  forMs?: number;
  /** For agent/everyone: a grant written to the grants file. */
  always?: boolean;
  by?: string;
}

/** A refusal of an API or CLI action, with the HTTP status it maps to. */
export class ApprovalError extends Error {
  override name = 'ApprovalError';
  constructor(
    readonly status: 400 | 404 | 409 | 500,
    message: string,
  ) {
    super(message);
  }
}

/** A queue change, for the SSE stream and the webhook. */
export interface ApprovalEvent {
  type: 'pending' | 'resolved';
  approval: PendingApproval & {
    outcome?: 'approved' | 'denied' | 'timeout' | 'abandoned';
    by?: string;
    scope?: Scope;
    grant?: Grant | null;
  };
}
