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
