import type { HoldOutcome } from './types.js';

/** How a held request ended, for the record's detail.approval (who decided, the scope, the grant). */
export interface ApprovalNote {
  id: string | null;
  outcome: 'approved' | 'denied' | 'timeout' | 'overflow' | 'abandoned';
  by?: string;
  scope?: string;
  grant?: string;
  limit?: string;
  waitedMs: number;
}

/** The record's detail.approval for a held request's end. */
export function approvalNote(o: HoldOutcome, waitedMs: number): ApprovalNote {
  const note: ApprovalNote = { id: o.kind === 'overflow' ? null : o.approvalId, outcome: o.kind, waitedMs: Math.round(waitedMs) };
  if (o.kind === 'approved') {
    note.by = o.by;
    note.scope = o.scope;
    if (o.grant) note.grant = o.grant.id;
  } else if (o.kind === 'denied') note.by = o.by;
  else if (o.kind === 'overflow') note.limit = o.limit;
  return note;
}
