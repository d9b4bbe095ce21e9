import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { HostError, normalizeHostPattern } from '../net/host.js';
import { parseCidr } from '../net/ip.js';
import type { PortRange } from './types.js';
import { TUNNEL_PROTOCOLS } from './vocabulary.js';

/**
 * The structural half of policy validation: shapes and types only. Meaning (hosts, CIDRs, ports,
 * duplicates) is checked in load.ts, where each error can be tied to the exact YAML node.
 * additionalProperties: false everywhere so a misspelt key is an error, never a silently ignored line.
 */
const cidrList = { type: 'array', items: { type: 'string' } } as const;

const SECRET_NAME = '^[a-z0-9][a-z0-9_-]{0,63}$';
/** name → a value glob or a list of them. */
const valueMatchers = {
  type: 'object',
  minProperties: 1,
  additionalProperties: { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, items: { type: 'string' } }] },
} as const;

const secret = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', pattern: SECRET_NAME },
    env: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
    file: { type: 'string', minLength: 1 },
    placeholder: { type: 'string', pattern: '^[A-Za-z0-9._~+/=:-]{12,256}$' },
  },
} as const;

const rule = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'action'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:@/*-]*$' },
    action: { enum: ['allow', 'deny', 'ask'] },
    hosts: { type: 'array', minItems: 1, items: { type: 'string' } },
    cidrs: { type: 'array', minItems: 1, items: { type: 'string' } },
    ports: { type: 'array', minItems: 1, items: { type: ['integer', 'string'] } },
    methods: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[A-Za-z]{1,20}$' } },
    dns_types: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9]{0,15}$' } },
    inspect: { type: 'boolean' },
    paths: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
    query: valueMatchers,
    match_headers: valueMatchers,
    secrets: { type: 'array', minItems: 1, items: { type: 'string', pattern: SECRET_NAME } },
    headers: { type: 'object', minProperties: 1, additionalProperties: { type: 'string' } },
    // Written by `approvals approve --always` (who, when): shown by `approvals grants`, ignored by decisions.
    granted: {
      type: 'object',
      additionalProperties: false,
      properties: { by: { type: 'string', maxLength: 256 }, at: { type: 'string', maxLength: 64 }, approval: { type: 'string', maxLength: 64 } },
    },
    protocols: { type: 'array', minItems: 1, items: { enum: TUNNEL_PROTOCOLS } },
  },
} as const;

const agent = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    // An agent name is a proxy username: no colon (Basic auth splits on it), no spaces.
    name: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
    token_sha256: { type: 'string', pattern: '^[0-9a-fA-F]{64}$' },
    token_env: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
    sources: cidrList,
    cert_names: { type: 'array', items: { type: 'string', minLength: 1 } },
    mode: { enum: ['enforce', 'report'] },
    shared_rules: { type: 'boolean' },
    on_no_match: { enum: ['deny', 'ask'] },
    rules: { type: 'array', items: rule },
  },
} as const;

export const policySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version'],
  properties: {
    version: { const: 1 },
    mode: { enum: ['enforce', 'report'] },
    require_auth: { type: 'boolean' },
    on_no_match: { enum: ['deny', 'ask'] },
    address_guard: {
      type: 'object',
      additionalProperties: false,
      properties: { exempt: cidrList },
    },
    rules: { type: 'array', items: rule },
    agents: { type: 'array', items: agent },
    secrets: { type: 'array', items: secret },
    inspection: {
      type: 'object',
      additionalProperties: false,
      required: ['ca', 'ca_key'],
      properties: { ca: { type: 'string', minLength: 1 }, ca_key: { type: 'string', minLength: 1 } },
    },
  },
} as const;

let validator: ValidateFunction | null = null;

/** Compiled once, on first use: ajv code generation is not free and reloads are frequent in tests. */
export function validateShape(data: unknown): ErrorObject[] {
  if (!validator) validator = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(policySchema);
  return validator(data) ? [] : [...(validator.errors ?? [])];
}

/** A human sentence for one ajv error (ajv's own messages name schema keywords, not policy keys). */
export function shapeMessage(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown key ${JSON.stringify(p.additionalProperty)}`;
    case 'required':
      return `missing required key ${JSON.stringify(p.missingProperty)}`;
    case 'enum':
      return `must be one of: ${(p.allowedValues as unknown[]).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify(p.allowedValue)}`;
    case 'type':
      return `must be ${Array.isArray(p.type) ? (p.type as string[]).join(' or ') : String(p.type)}`;
    case 'minItems':
    case 'minProperties':
      return 'must not be empty';
    case 'anyOf':
      return 'must be a string or a list of strings';
    case 'pattern':
      return `has an invalid format (must match ${String(p.pattern)})`;
    default:
      return e.message ?? 'is invalid';
  }
}

/** A value that could not be read; `message` is ready to show the policy author. */
export class ValueError extends Error {
  override name = 'ValueError';
}

const DECIMAL = /^[0-9]{1,5}$/;

function portNumber(text: string): number {
  if (!DECIMAL.test(text)) throw new ValueError(`port ${JSON.stringify(text)} is not a decimal number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new ValueError(`port ${text} is out of range 1-65535`);
  return n;
}

/**
 * One port item as written: a decimal number or "a-b". `raw` is the source text, because YAML reads
 * 443e1 as 4430 and 0x1bb as 443; only plain decimal spellings are accepted.
 */
export function parsePortItem(raw: string): PortRange {
  const text = raw.trim();
  const dash = text.indexOf('-');
  if (dash === -1) {
    const p = portNumber(text);
    return [p, p];
  }
  if (text.indexOf('-', dash + 1) !== -1) throw new ValueError(`bad port range ${JSON.stringify(text)} (write "low-high")`);
  const lo = portNumber(text.slice(0, dash).trim());
  const hi = portNumber(text.slice(dash + 1).trim());
  if (lo > hi) throw new ValueError(`port range ${JSON.stringify(text)} runs backwards`);
  return [lo, hi];
}

/** A comma list as used by flags: "443,80,8000-8100". */
export function parsePortList(text: string): PortRange[] {
  if (text.trim() === '') throw new ValueError('empty port list');
  return text.split(',').map(parsePortItem);
}

/**
 * One host pattern for a rule's `hosts`, normalised. Rejects what a pattern cannot mean: IP literals
 * (they belong in cidrs, where they are compared as addresses), `**`, and globs that can only ever
 * look like IPv4 addresses (a numeric last label makes a host an address, never a name).
 */
export function parseHostPattern(text: string): string {
  let h;
  try {
    h = normalizeHostPattern(text);
  } catch (e) {
    if (e instanceof HostError) throw new ValueError(`bad host pattern ${JSON.stringify(text)}: ${e.message}`);
    throw e;
  }
  if (h.kind === 'ip') {
    throw new ValueError(`${JSON.stringify(text)} is an IP address; write it under cidrs (e.g. ${h.value}/${h.family === 4 ? 32 : 128})`);
  }
  const v = h.value;
  if (v === '*') return v;
  if (v.includes('**')) throw new ValueError(`bad glob ${JSON.stringify(text)}: "**" is not supported (a leading "*." already matches any depth)`);
  if (v.includes('*')) {
    const labels = v.split('.');
    const last = labels[labels.length - 1];
    if (/^[0-9*]+$/.test(last) && labels.every((l) => /^[0-9*]+$/.test(l))) {
      throw new ValueError(`bad glob ${JSON.stringify(text)}: it can only match IP addresses, which host patterns never match; use cidrs`);
    }
    if (/^\d+$/.test(last)) throw new ValueError(`bad glob ${JSON.stringify(text)}: a numeric last label makes a host an IP address`);
  }
  return v;
}

/** A CIDR in canonical text; host bits set is an error (see parseCidr). */
export function parseCidrText(text: string): string {
  try {
    return parseCidr(text).text;
  } catch (e) {
    throw new ValueError((e as Error).message);
  }
}
