import type { ErrorObject } from 'ajv';
import { HostError, normalizeHostPattern } from '../net/host.js';
import { parseCidr } from '../net/ip.js';
import type { PortRange } from './types.js';
import { validate as generated } from './policy-validator.js';

const validate = generated as ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };

/**
 * The structural check of policy-schema.ts, compiled ahead of time by ajv (policy-validator.ts, made by
 * scripts/gen-policy-validator.mjs): a running proxy carries neither ajv's compiler nor the code it would
 * generate at start, about 1.5 MiB of heap (docs/performance.md, memory).
 */
export function validateShape(data: unknown): ErrorObject[] {
  return validate(data) ? [] : [...(validate.errors ?? [])];
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
