import { stringify } from 'yaml';
import type { DecisionRecord } from './record.js';
import { suggestPolicy } from './suggest.js';
import { normalizeHost } from '../net/host.js';

export interface RuleSnippets {
  /** An allow rule for this destination, as `policy suggest` would write it; null when it would not propose one. */
  allow: string | null;
  /** Why no allow rule is proposed (a guard refusal, a deny rule, an internal name, ...). */
  allowWhy: string | null;
  /** A deny rule for exactly this host (or address) and port; null when the host is not a valid name or address. */
  deny: string | null;
  /** The agent whose `rules:` the snippet belongs under; null for the shared rules. */
  agent: string | null;
}

/**
 * Ready-to-paste rules for one record: the allow comes from suggestPolicy (so it never proposes what
 * `policy suggest` refuses to: guarded addresses, internal names, paste hosts), the deny is exact.
 * Both are YAML list items for a `rules:` sequence.
 */
export function ruleSnippets(r: DecisionRecord): RuleSnippets {
  let host;
  try {
    host = normalizeHost(r.host);
  } catch {
    return { allow: null, allowWhy: 'the recorded host is not a valid name or address', deny: null, agent: r.agent };
  }
  const s = suggestPolicy([{ ...r, agent: null }]);
  const rule = s.added[0];
  const allow = rule ? stringify([{ name: rule.name, action: 'allow', ...(rule.hosts ? { hosts: rule.hosts } : {}), ...(rule.cidrs ? { cidrs: rule.cidrs } : {}), ports: rule.ports }]) : null;
  const allowWhy = rule
    ? null
    : (s.skipped[0]?.why ??
      (s.flagged[0] ? `a known ${s.flagged[0].entry} host: allow it only if you mean to` : r.port === null ? 'a DNS lookup names no port to allow' : 'not a destination the policy lacks'));
  const target = host.kind === 'name' ? { hosts: [host.value] } : { cidrs: [host.value.includes(':') ? `${host.value}/128` : `${host.value}/32`] };
  const deny = stringify([{ name: `deny-${host.value}`.slice(0, 60), action: 'deny', ...target, ...(r.port !== null ? { ports: [r.port] } : {}) }]);
  return { allow, allowWhy, deny, agent: r.agent };
}
