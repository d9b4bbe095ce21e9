import path from 'node:path';
import type { Logger } from 'pino';
import { ApprovalBroker } from '../approvals/broker.js';
import { GRANTS_FILE, GrantStore } from '../approvals/grant-store.js';
import { mergeGrants } from '../approvals/grants-file.js';
import type { ApprovalEvent } from '../approvals/types.js';
import { displaySafe } from '../decisions/display.js';
import { WebhookSender } from '../decisions/webhook.js';
import type { PolicySpec } from '../policy/types.js';
import { DNS_APPROVAL_TIMEOUT_MS } from '../dns/approval-timeout.js';

export interface ApprovalsConfig {
  /** How long a held request waits (default 60 s). */
  timeoutMs?: number;
  /** How long a held DNS query waits (default 4 s, and never longer than timeoutMs). */
  dnsTimeoutMs?: number;
  maxPerAgent?: number;
  maxTotal?: number;
  /** Default <data-dir>/grants.yaml. */
  grantsFile?: string;
  /** POST each new pending approval here (JSON with a Slack-compatible `text`). */
  webhook?: string;
}

export interface RunningApprovals {
  grants: GrantStore;
  /** null when nobody could decide (no admin API): an ask is then refused (approval_required). */
  broker: ApprovalBroker | null;
  transform: (spec: PolicySpec) => PolicySpec;
  dnsTimeoutMs: number;
  /** Queue changes, for the admin API's event stream; returns the unsubscribe. */
  subscribe(fn: (e: ApprovalEvent) => void): () => void;
  close(): Promise<void>;
}

/** The text a person reads in a chat channel: recorded names are displaySafe there. */
export function approvalText(e: ApprovalEvent): string {
  const a = e.approval;
  const where = a.port === null ? `${a.host} (DNS)` : `${a.host}:${a.port}`;
  return `agent-egress: ${a.agent === null ? 'an anonymous client' : `agent ${displaySafe(a.agent)}`} asks to reach ${displaySafe(where)} (${a.method}; ${displaySafe(a.reason)}). Approve: agent-egress approvals approve ${a.id}`;
}

/** Grants (always loaded: they are rules) and, when someone can decide, the broker and its notifications. */
export function startApprovals(
  cfg: ApprovalsConfig,
  env: { dataDir?: string; decidable: boolean; logger: Logger; rebuild: () => void },
): RunningApprovals {
  const file = cfg.grantsFile ?? path.join(env.dataDir ?? './data', GRANTS_FILE);
  const grants = new GrantStore({ file, logger: env.logger, onChange: () => env.rebuild() });
  grants.load();
  const listeners = new Set<(e: ApprovalEvent) => void>();
  const webhook = cfg.webhook ? new WebhookSender({ url: cfg.webhook }, env.logger, 'approval webhook failed') : null;
  const broker = env.decidable
    ? new ApprovalBroker({
        timeoutMs: cfg.timeoutMs,
        maxPerAgent: cfg.maxPerAgent,
        maxTotal: cfg.maxTotal,
        grants,
        onEvent: (e, isNew) => {
          for (const fn of listeners) fn(e);
          if (isNew) {
            env.logger.info({ approval: { ...e.approval, agent: e.approval.agent === null ? null : displaySafe(e.approval.agent), host: displaySafe(e.approval.host) } }, 'approval pending');
            webhook?.send({ type: 'approval_pending', text: approvalText(e), approval: e.approval });
          }
        },
      })
    : null;
  const timeout = cfg.timeoutMs ?? 60_000;
  return {
    grants,
    broker,
    transform: (spec) => mergeGrants(spec, grants.rules()),
    dnsTimeoutMs: Math.min(cfg.dnsTimeoutMs ?? DNS_APPROVAL_TIMEOUT_MS, timeout),
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    async close() {
      broker?.close();
      grants.close();
      await webhook?.close();
    },
  };
}
