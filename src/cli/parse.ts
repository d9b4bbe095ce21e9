import { InvalidArgumentError, Option } from 'commander';
import { displaySafe } from '../decisions/display.js';

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "250ms", "10s", "5m", "2h", "30d", or a bare number of milliseconds. */
export function parseDurationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`expected a duration like 500ms, 10s, 5m, 2h or 30d, got ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 'ms']);
}

export function parsePositiveInt(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) throw new InvalidArgumentError(`expected a positive whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** A finite number greater than zero, e.g. 1.5. */
export function parsePositiveNumber(text: string): number {
  const n = Number(text.trim());
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !(n > 0)) throw new InvalidArgumentError(`expected a number greater than 0, got ${JSON.stringify(text)}`);
  return n;
}

/** An http:// or https:// URL. */
export function parseHttpUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new InvalidArgumentError(`expected an http:// or https:// URL, got ${JSON.stringify(text)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError(`expected an http:// or https:// URL, got ${JSON.stringify(text)}`);
  return text;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/**
 * A repeatable option that can also come from AGENT_EGRESS_<NAME> (whitespace-separated values, since
 * commas belong to port lists).
 */
export function repeatable(flags: string, description: string, envName: string): Option {
  return new Option(flags, `${description} (repeatable; several values in the env var are space-separated)`)
    .argParser(collect)
    .env(envName);
}

/** Values from a repeatable option: a flag gives an array; the env var gives one string to split. */
export function listValue(v: string[] | string | undefined): string[] {
  if (v === undefined) return [];
  if (typeof v === 'string') return v.split(/\s+/).filter(Boolean);
  return v.flatMap((x) => (x.includes(' ') ? x.split(/\s+/).filter(Boolean) : [x]));
}

const SIZE: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** "500MB", "2GB", "100kb" or bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`expected a size like 500MB or 2GB, got ${JSON.stringify(text)}`);
  return Math.round(Number(m[1]) * SIZE[(m[2] ?? 'b').toLowerCase()]);
}

/** A usage error found inside a command's action (a flag value only the action can judge): exit 2, one line. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * One line for a usage error: commander's own text ("error: ...", sometimes followed by a
 * "(Did you mean ...?)" line) folded into "agent-egress serve: <cause> (see --help)". Control
 * characters a user typed into a flag value are escaped so the line stays one line on a terminal.
 */
export function usageLine(command: string, text: string): string {
  const cause = text
    .replace(/^error:\s*/i, '')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
  return `${command}: ${displaySafe(cause)} (see ${command} --help)\n`;
}
