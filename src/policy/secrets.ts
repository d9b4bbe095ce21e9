import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { PolicyError, type HeaderSetting, type RuleEffects, type SecretSpec } from './types.js';

/** The placeholder an agent holds when the policy does not name one. */
export function defaultPlaceholder(name: string): string {
  return `agent-egress-placeholder-${name}`;
}

/** `${secret:NAME}` in a rule's header values. */
export const SECRET_REF = /\$\{secret:([a-z0-9][a-z0-9_-]{0,63})\}/g;

/** A header value the proxy may send: no CR, LF or NUL (they would split or end the header). */
const HEADER_SAFE = /^[^\r\n\0]*$/;

/**
 * The secrets of one policy load: placeholders (public) and values (read from env/files at load).
 * Values live in a private field and have no way out but `substitute`: JSON.stringify, util.inspect
 * and error messages see only names, so a record, a log line or the admin API cannot carry one.
 */
export class SecretTable {
  readonly #values = new Map<string, string>();
  readonly #placeholders: { name: string; placeholder: string }[];

  constructor(specs: readonly SecretSpec[], values: ReadonlyMap<string, string>) {
    this.#placeholders = specs.map((s) => ({ name: s.name, placeholder: s.placeholder }));
    for (const [k, v] of values) this.#values.set(k, v);
  }

  static empty(): SecretTable {
    return new SecretTable([], new Map());
  }

  /** Whether the secret's value was loaded (an unset env or unreadable file leaves it unusable). */
  loaded(name: string): boolean {
    return this.#values.has(name);
  }

  get size(): number {
    return this.#placeholders.length;
  }

  /** Names of the secrets whose placeholder occurs in `text`. */
  found(text: string, into: Set<string>): void {
    for (const p of this.#placeholders) if (text.includes(p.placeholder)) into.add(p.name);
  }

  /** `text` with the placeholders of the `allowed` secrets replaced by their values. */
  substitute(text: string, allowed: readonly string[]): string {
    let out = text;
    for (const p of this.#placeholders) {
      if (!allowed.includes(p.name) || !out.includes(p.placeholder)) continue;
      const v = this.#values.get(p.name);
      // A value not loaded (check, validate) never reaches a request: the proxy always loads them.
      if (v === undefined) throw new Error(`secret ${p.name} has no value loaded`);
      out = out.split(p.placeholder).join(v);
    }
    return out;
  }

  /** A rule header's value with its `${secret:NAME}` references filled in. */
  expand(value: string): string {
    return value.replace(SECRET_REF, (_m, name: string) => {
      const v = this.#values.get(name);
      if (v === undefined) throw new Error(`secret ${name} has no value loaded`);
      return v;
    });
  }

  toJSON(): unknown {
    return { secrets: this.#placeholders.map((p) => p.name) };
  }

  [inspect.custom](): string {
    return `SecretTable(${this.#placeholders.map((p) => p.name).join(', ')})`;
  }
}

/**
 * Read every secret's value (env or file). A missing value is a warning naming the secret's file:line
 * (never the value), like an unset token_env: that secret is then unusable, and a request whose rule
 * would broker it is refused (fail closed). A value that cannot go into a header refuses the load.
 * `loadValues: false` (check) keeps the placeholders only.
 */
export function loadSecrets(specs: readonly SecretSpec[], env: NodeJS.ProcessEnv, loadValues = true, warnings: string[] = []): SecretTable {
  const values = new Map<string, string>();
  const errors: PolicyError['errors'] = [];
  if (loadValues) {
    for (const s of specs) {
      let v: string | undefined;
      if (s.env !== null) {
        v = env[s.env];
        if (v === undefined || v === '') {
          warnings.push(`${s.pos.file}:${s.pos.line}: secret ${s.name}: environment variable ${s.env} is not set; requests that need it are refused`);
          continue;
        }
      } else if (s.file !== null) {
        try {
          v = readFileSync(s.file, 'utf8').replace(/\r?\n$/, '');
        } catch (e) {
          warnings.push(`${s.pos.file}:${s.pos.line}: secret ${s.name}: cannot read ${s.file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}; requests that need it are refused`);
          continue;
        }
        if (v === '') {
          warnings.push(`${s.pos.file}:${s.pos.line}: secret ${s.name}: ${s.file} is empty; requests that need it are refused`);
          continue;
        }
      }
      if (v === undefined) continue;
      if (!HEADER_SAFE.test(v)) {
        errors.push({ file: s.pos.file, line: s.pos.line, column: 1, message: `secret ${s.name}: the value contains CR, LF or NUL and cannot go into a header` });
        continue;
      }
      values.set(s.name, v);
    }
  }
  if (errors.length > 0) throw new PolicyError(errors);
  return new SecretTable(specs, values);
}

export type BrokerResult =
  | { ok: true; headers: string[]; used: string[] }
  | { ok: false; secret: string };

/**
 * Credential brokering for one allowed request: headers as a flat [name, value, …] list (after
 * hop-by-hop stripping). A placeholder of a secret the deciding rule does not list, anywhere in the
 * headers, the path or the query, refuses the request (`secret_not_allowed`). Otherwise the listed
 * secrets' placeholders in header values are replaced and the rule's headers are set.
 */
export function broker(table: SecretTable, effects: RuleEffects | null | undefined, headers: string[], target: string): BrokerResult {
  const allowed = effects?.secrets ?? [];
  const setting: readonly HeaderSetting[] = effects?.setHeaders ?? [];
  if (table.size === 0 && setting.length === 0) return { ok: true, headers, used: [] };
  const seen = new Set<string>();
  table.found(target, seen);
  for (let i = 1; i < headers.length; i += 2) table.found(headers[i], seen);
  // A placeholder of a secret the rule does not broker, or whose value is not loaded, never leaves.
  for (const name of seen) if (!allowed.includes(name) || !table.loaded(name)) return { ok: false, secret: name };
  for (const h of setting) for (const m of h.value.matchAll(SECRET_REF)) if (!table.loaded(m[1])) return { ok: false, secret: m[1] };
  const used = [...seen];
  let out = headers;
  if (seen.size > 0) {
    out = headers.slice();
    for (let i = 1; i < out.length; i += 2) out[i] = table.substitute(out[i], allowed);
  }
  if (setting.length > 0) {
    const names = new Set(setting.map((h) => h.name));
    const kept: string[] = [];
    for (let i = 0; i < out.length; i += 2) if (!names.has(out[i].toLowerCase())) kept.push(out[i], out[i + 1]);
    for (const h of setting) {
      kept.push(h.name, table.expand(h.value));
      for (const m of h.value.matchAll(SECRET_REF)) if (!used.includes(m[1])) used.push(m[1]);
    }
    out = kept;
  }
  return { ok: true, headers: out, used };
}
