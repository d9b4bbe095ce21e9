import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { PolicyError, type RuleSpec } from '../policy/types.js';
import { addGrantText, grantRule, parseGrantsText, removeGrantText, type GrantRules, type ParsedGrants } from './grants-file.js';
import { ApprovalError, type Grant } from './types.js';

export const GRANTS_FILE = 'grants.yaml';

export interface GrantStoreOptions {
  /** The grants file (always grants); created on the first one. */
  file: string;
  /** Called after every change to the set of grants (the policy is rebuilt with them). */
  onChange?: () => void;
  logger?: { info(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

interface Temporary {
  grant: Grant;
  rule: RuleSpec;
  timer: NodeJS.Timeout;
}

/**
 * The grants in force: "always" grants from the grants file (reloaded when it changes, refused with
 * file and line when an edit is bad, keeping the ones in force) and temporary grants, in memory only,
 * each removed when it expires. A restart keeps the file's grants and forgets the temporary ones.
 */
export class GrantStore {
  private file: ParsedGrants = { grants: [], rules: { shared: [], agents: new Map() } };
  private readonly temporary = new Map<string, Temporary>();
  private seen: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  lastError: { time: string; message: string } | null = null;

  constructor(private readonly o: GrantStoreOptions) {}

  get path(): string {
    return this.o.file;
  }

  /** Read the file (missing = no grants). Throws PolicyError for a bad file: at start, that stops serve. */
  load(): void {
    const { text, key } = this.read();
    this.file = text === null ? { grants: [], rules: { shared: [], agents: new Map() } } : parseGrantsText(text, this.o.file);
    this.seen = key;
  }

  /** Re-read after an outside edit; a bad edit is logged and kept out, the grants in force stay. */
  reload(): boolean {
    try {
      this.load();
      this.lastError = null;
    } catch (err) {
      try {
        this.seen = this.read().key;
      } catch {
        this.seen = 'unreadable';
      }
      const message = (err as Error).message;
      this.lastError = { time: new Date().toISOString(), message };
      this.o.logger?.error({ file: this.o.file, error: message }, 'grants file reload failed; keeping the grants in force');
      return false;
    }
    this.o.onChange?.();
    return true;
  }

  watch(intervalMs = 1_000): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      let key: string;
      try {
        key = this.read().key;
      } catch {
        key = 'unreadable';
      }
      if (key !== this.seen) this.reload();
    }, intervalMs);
    this.timer.unref();
  }

  rules(): GrantRules {
    if (this.temporary.size === 0) return this.file.rules;
    const shared = [...this.file.rules.shared];
    const agents = new Map<string, RuleSpec[]>([...this.file.rules.agents].map(([k, v]) => [k, [...v]]));
    for (const t of this.temporary.values()) {
      if (t.grant.agent === null) shared.push(t.rule);
      else agents.set(t.grant.agent, [...(agents.get(t.grant.agent) ?? []), t.rule]);
    }
    return { shared, agents };
  }

  list(): Grant[] {
    return [...this.file.grants, ...[...this.temporary.values()].map((t) => t.grant)];
  }

  add(g: { agent: string | null; host: string; port: number | null; forMs: number | null; always: boolean; by: string; approval?: string | null }): Promise<Grant> {
    return this.serial(async () => {
      const now = Date.now();
      const id = `g_${now.toString(36)}${randomBytes(4).toString('hex')}`;
      const grant: Grant = {
        id,
        agent: g.agent,
        host: g.host,
        port: g.port,
        expiresAt: g.always || g.forMs === null ? null : new Date(now + g.forMs).toISOString(),
        always: g.always,
        by: g.by,
        createdAt: new Date(now).toISOString(),
        approval: g.approval ?? null,
        rule: `grant:${id}`,
      };
      if (g.always) {
        const { text } = this.read();
        this.writeChecked(addGrantText(text, grant));
      } else {
        if (g.forMs === null || !(g.forMs > 0)) throw new ApprovalError(400, 'a temporary grant needs a duration');
        const timer = setTimeout(() => {
          this.temporary.delete(id);
          this.o.logger?.info({ grant: id }, 'temporary grant expired');
          this.o.onChange?.();
        }, Math.min(g.forMs, 2 ** 31 - 1));
        timer.unref();
        this.temporary.set(id, { grant, rule: grantRule(grant), timer });
      }
      this.o.onChange?.();
      return grant;
    });
  }

  revoke(id: string): Promise<Grant> {
    return this.serial(async () => {
      const t = this.temporary.get(id);
      if (t) {
        clearTimeout(t.timer);
        this.temporary.delete(id);
        this.o.onChange?.();
        return t.grant;
      }
      const g = this.file.grants.find((x) => x.id === id);
      if (!g) throw new ApprovalError(404, `no grant ${id}`);
      const { text } = this.read();
      const next = text === null ? null : removeGrantText(text, g.rule);
      if (next === null) throw new ApprovalError(409, `grant ${id} is no longer in ${this.o.file}`);
      this.writeChecked(next);
      this.o.onChange?.();
      return g;
    });
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const t of this.temporary.values()) clearTimeout(t.timer);
  }

  /** Edits one at a time: two approvals at once must not each write the file from the same old text. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Never write what would not load: the new text is parsed first, then written atomically (0600). */
  private writeChecked(text: string): void {
    let parsed: ParsedGrants;
    try {
      parsed = parseGrantsText(text, this.o.file);
    } catch (err) {
      if (err instanceof PolicyError) throw new ApprovalError(500, `the grants file would not load: ${err.message}`);
      throw err;
    }
    mkdirSync(path.dirname(this.o.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.o.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      unlinkSync(tmp);
      throw err;
    }
    closeSync(fd);
    renameSync(tmp, this.o.file);
    this.file = parsed;
    this.seen = this.read().key;
  }

  private read(): { text: string | null; key: string } {
    try {
      const st = statSync(this.o.file);
      const text = readFileSync(this.o.file, 'utf8');
      return { text, key: `${st.ino}:${st.size}:${st.mtimeMs}:${text.length}` };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { text: null, key: 'missing' };
      throw new PolicyError([{ file: this.o.file, line: 0, column: 0, message: `cannot read grants file: ${(err as Error).message}` }]);
    }
  }
}
