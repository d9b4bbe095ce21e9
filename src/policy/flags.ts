import { parseCidrText, parseHostPattern, parsePortList, ValueError } from './schema.js';
import { normalizeHostPattern } from '../net/host.js';
import { policyHash } from './compile.js';
import { PolicyError, type PolicySpec, type PortRange, type RuleSpec } from './types.js';

/** Raw values of the repeatable --allow, --deny and --allow-address flags. */
export interface PolicyFlags {
  allow: string[];
  deny: string[];
  allowAddress: string[];
}

const FILE = '<flags>';

/**
 * Add flag rules to a policy (or build a default-deny policy from flags alone when base is null).
 * Each --allow/--deny value becomes one shared rule named `flag:<action>:<target>`. Every bad value
 * is reported, in one PolicyError, before anything is applied.
 */
export function applyFlags(base: PolicySpec | null, flags: PolicyFlags): PolicySpec {
  const errors: PolicyError['errors'] = [];
  const rules: RuleSpec[] = [];
  const names = new Set((base?.rules ?? []).map((r) => r.name));
  const add = (action: 'allow' | 'deny', value: string): void => {
    const name = `flag:${action}:${value.trim()}`;
    let rule: RuleSpec;
    try {
      rule = { name, action, ...parseFlagTarget(value.trim()), methods: null, dnsTypes: null, ...NO_EFFECTS, pos: { file: FILE, line: 0 } };
    } catch (e) {
      if (!(e instanceof ValueError)) throw e;
      errors.push({ file: FILE, line: 0, column: 0, message: `--${action} ${JSON.stringify(value)}: ${e.message}` });
      return;
    }
    if (rules.some((r) => r.name === name)) return; // the same flag twice says nothing new
    if (names.has(name)) {
      errors.push({ file: FILE, line: 0, column: 0, message: `--${action} ${JSON.stringify(value)}: the policy already has a rule named ${JSON.stringify(name)}` });
      return;
    }
    rules.push(rule);
  };
  for (const v of flags.allow) add('allow', v);
  for (const v of flags.deny) add('deny', v);
  const exempt: string[] = [];
  for (const v of flags.allowAddress) {
    try {
      exempt.push(parseCidrText(v.trim()));
    } catch (e) {
      errors.push({ file: FILE, line: 0, column: 0, message: `--allow-address ${JSON.stringify(v)}: ${(e as Error).message}` });
    }
  }
  if (errors.length > 0) throw new PolicyError(errors);

  const spec: PolicySpec = {
    file: base?.file ?? FILE,
    hash: '',
    mode: base?.mode ?? 'enforce',
    requireAuth: base?.requireAuth ?? false,
    ...(base?.onNoMatch ? { onNoMatch: base.onNoMatch } : {}),
    guardExempt: [...new Set([...(base?.guardExempt ?? []), ...exempt])],
    rules: [...(base?.rules ?? []), ...rules],
    agents: base?.agents ?? [],
    secrets: base?.secrets ?? [],
    inspection: base?.inspection ?? null,
  };
  spec.hash = policyHash(spec);
  return spec;
}

/** A flag rule constrains no request detail and asks for nothing beyond letting it through. */
const NO_EFFECTS = { request: { paths: null, query: null, matchHeaders: null }, inspect: false, secrets: [], setHeaders: [], protocols: null };

type Target = Pick<RuleSpec, 'hosts' | 'cidrs' | 'ports'>;

/**
 * `host-or-cidr[:ports]`: `api.openai.com`, `*.github.com:443,80`, `10.0.0.0/8:8000-8100`,
 * `[2001:db8::]/32:443`. An unbracketed value with several colons is a bare IPv6 address or CIDR
 * (no ports: brackets are needed to tell the two apart).
 */
export function parseFlagTarget(value: string): Target {
  if (value === '') throw new ValueError('empty value');
  let target: string;
  let portText: string | null = null;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close === -1) throw new ValueError('unterminated "[" (write IPv6 as [2001:db8::]/32:443)');
    let rest = value.slice(close + 1);
    let prefix = '';
    const m = /^(\/\d{1,3})?(?::(.*))?$/.exec(rest);
    if (!m) throw new ValueError(`unexpected ${JSON.stringify(rest)} after "]"`);
    prefix = m[1] ?? '';
    rest = m[2] ?? '';
    target = value.slice(1, close) + prefix;
    portText = m[2] !== undefined ? rest : null;
  } else {
    const colons = value.split(':').length - 1;
    if (colons > 1) target = value;
    else if (colons === 1) {
      const at = value.indexOf(':');
      target = value.slice(0, at);
      portText = value.slice(at + 1);
    } else target = value;
  }
  const ports: PortRange[] | null = portText === null ? null : parsePortList(portText);
  if (target.includes('/') || target.includes(':')) return { hosts: [], cidrs: [parseCidrText(target)], ports };
  // A plain address is accepted on the command line and taken as its /32 or /128.
  let h;
  try {
    h = normalizeHostPattern(target);
  } catch {
    h = null;
  }
  if (h?.kind === 'ip') return { hosts: [], cidrs: [parseCidrText(h.value)], ports };
  return { hosts: [parseHostPattern(target)], cidrs: [], ports };
}
