import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { applyFlags, compilePolicy, loadPolicyFile, parsePolicyText, type PolicyFlags } from '../policy/index.js';
import type { PolicyHolder, PolicyState } from '../policy/holder.js';
import { PolicyError, type CompiledPolicy, type PolicySpec } from '../policy/types.js';

/** Builds the policy from an optional file plus CLI flags; the file part can be reloaded. */
export function buildPolicy(
  file: string | undefined,
  flags: PolicyFlags,
  env: NodeJS.ProcessEnv = process.env,
  opts: BuildOptions = {},
): CompiledPolicy {
  return buildFromSpec(file ? loadPolicyFile(file) : null, flags, env, opts);
}

/** The file part already parsed (a reload parses exactly the bytes it saw stable). */
function buildFromSpec(base: PolicySpec | null, flags: PolicyFlags, env: NodeJS.ProcessEnv, opts: BuildOptions): CompiledPolicy {
  const flagged = applyFlags(base, flags);
  const spec = opts.transform ? opts.transform(flagged) : flagged;
  if (!opts.inspectCa) requireInspectionCa(spec);
  return compilePolicy(spec, env, { secretValues: opts.secretValues });
}

export interface BuildOptions {
  /** An inspection CA comes from the command line (--inspect-ca), so the policy need not name one. */
  inspectCa?: boolean;
  /** false: do not read secret values (check, policy validate). */
  secretValues?: boolean;
  /** Applied to the spec after the flags, at every build (the approvals' grants are merged here). */
  transform?: (spec: PolicySpec) => PolicySpec;
}

/** A rule that inspects needs a CA to mint with: without one the policy is refused at its line. */
export function requireInspectionCa(spec: PolicySpec): void {
  if (spec.inspection) return;
  const rules = [...spec.rules, ...spec.agents.flatMap((a) => a.rules)].filter((r) => r.inspect);
  if (rules.length === 0) return;
  throw new PolicyError(
    rules.map((r) => ({
      file: r.pos.file,
      line: r.pos.line,
      column: 1,
      message: `rule ${r.name}: inspect: true needs an inspection CA (serve --inspect-ca FILE --inspect-ca-key FILE, or inspection: { ca, ca_key } in the policy)`,
    })),
  );
}

/** Default time a changed policy file must stay unchanged before it is read (`--policy-settle`). */
export const DEFAULT_SETTLE_MS = 2_000;

/** One observation of the file: identity, size, mtime and a hash of the very bytes read. */
interface Snapshot {
  key: string;
  text: string | null;
  mtimeMs: number;
}

export interface PolicyHolderOptions extends BuildOptions {
  /**
   * A changed file is loaded only after it has stayed unchanged (inode, size, mtime, content hash)
   * this long, so a file written in two steps (scp, `kubectl cp`, a shell `>` redirect) is never
   * loaded half-way. 0 reads at once.
   */
  settleMs?: number;
}

/**
 * The active policy, swapped whole on a successful reload. A reload that fails validation changes
 * nothing but the failure count and lastError: the running policy keeps enforcing.
 */
export class FilePolicyHolder implements PolicyHolder {
  private active: CompiledPolicy;
  private st: PolicyState;
  private readonly listeners: ((p: CompiledPolicy) => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** The file's identity when it was last read, so an edit made before the first poll is not missed. */
  private seen: string | null = null;
  private readonly settleMs: number;
  /** One reload at a time: a poll, SIGHUP or API call during a settling read joins it. */
  private inflight: Promise<{ ok: true; hash: string } | { ok: false; error: string }> | null = null;
  private closed = false;
  /** The file's spec as last loaded, so a rebuild (new grants) needs no read of the file. */
  private base: PolicySpec | null = null;

  constructor(
    private readonly file: string | undefined,
    private readonly flags: PolicyFlags,
    private readonly onEvent: (e: { ok: boolean; trigger: string; hash?: string; error?: string }) => void = () => {},
    private readonly opts: PolicyHolderOptions = {},
  ) {
    this.settleMs = opts.settleMs ?? DEFAULT_SETTLE_MS;
    this.seen = this.snapshot()?.key ?? null;
    this.base = file ? loadPolicyFile(file) : null;
    this.active = buildFromSpec(this.base, flags, process.env, opts);
    this.st = { policy: this.active, loadedAt: new Date().toISOString(), files: file ? [file] : [], reloads: 0, reloadFailures: 0, lastError: null };
  }

  current(): CompiledPolicy {
    return this.active;
  }

  state(): PolicyState {
    return { ...this.st, policy: this.active };
  }

  onChange(fn: (p: CompiledPolicy) => void): void {
    this.listeners.push(fn);
  }

  /**
   * Every trigger (poll, SIGHUP, API) reads the file only once it is stable: at once when its mtime
   * is already older than the settle time, otherwise after watching it stay unchanged that long
   * (giving up, and keeping the running policy, if it is still changing after 5 settle times).
   */
  reload(trigger: 'file' | 'signal' | 'api'): Promise<{ ok: true; hash: string } | { ok: false; error: string }> {
    this.inflight ??= this.doReload(trigger).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async doReload(trigger: 'file' | 'signal' | 'api'): Promise<{ ok: true; hash: string } | { ok: false; error: string }> {
    let next: CompiledPolicy;
    try {
      const snap = this.file ? await this.stableSnapshot() : null;
      this.seen = snap?.key ?? null;
      if (this.closed) return { ok: false, error: 'policy holder closed' };
      const base: PolicySpec | null = this.file ? this.parse(snap) : null;
      next = buildFromSpec(base, this.flags, process.env, this.opts);
      this.base = base;
    } catch (err) {
      const error = (err as Error).message;
      this.st.reloadFailures++;
      this.st.lastError = { time: new Date().toISOString(), message: error };
      this.onEvent({ ok: false, trigger, error });
      return { ok: false, error };
    }
    this.active = next;
    this.st = { ...this.st, policy: next, loadedAt: new Date().toISOString(), reloads: this.st.reloads + 1, lastError: null };
    for (const fn of this.listeners) fn(next);
    this.onEvent({ ok: true, trigger, hash: next.hash });
    return { ok: true, hash: next.hash };
  }

  /**
   * Rebuild from the policy as last loaded (the transform's input changed: a grant was added, revoked
   * or expired). Synchronous; a failure keeps the running policy, like a failed reload.
   */
  rebuild(trigger: string): boolean {
    let next: CompiledPolicy;
    try {
      next = buildFromSpec(this.base, this.flags, process.env, this.opts);
    } catch (err) {
      const error = (err as Error).message;
      this.st.reloadFailures++;
      this.st.lastError = { time: new Date().toISOString(), message: error };
      this.onEvent({ ok: false, trigger, error });
      return false;
    }
    this.active = next;
    this.st = { ...this.st, policy: next, loadedAt: new Date().toISOString(), lastError: null };
    for (const fn of this.listeners) fn(next);
    return true;
  }

  /** Parses exactly the bytes that were seen stable (never a second read that could be newer or torn). */
  private parse(snap: Snapshot | null): PolicySpec {
    if (!snap || snap.text === null) {
      throw new PolicyError([{ file: this.file!, line: 0, column: 0, message: 'cannot read policy: the file is missing or unreadable' }]);
    }
    return parsePolicyText(snap.text, this.file!);
  }

  private async stableSnapshot(): Promise<Snapshot | null> {
    let snap = this.snapshot();
    if (this.settleMs <= 0 || !snap) return snap;
    const step = Math.max(10, Math.min(100, Math.floor(this.settleMs / 10)));
    const giveUp = Date.now() + 5 * this.settleMs;
    // Already quiet for the settle time by the file's own clock: no need to wait.
    if (Date.now() - snap.mtimeMs >= this.settleMs) return snap;
    let since = Date.now();
    for (;;) {
      await new Promise((r) => setTimeout(r, step));
      if (this.closed) return snap;
      const now = this.snapshot();
      if (!now || now.key !== snap.key) {
        snap = now;
        since = Date.now();
        if (!snap) return null;
      } else if (Date.now() - since >= this.settleMs) {
        return snap;
      }
      if (Date.now() > giveUp) {
        throw new PolicyError([{ file: this.file!, line: 0, column: 0, message: `the file is still changing after ${5 * this.settleMs} ms; write it elsewhere and rename it into place` }]);
      }
    }
  }

  /**
   * Poll the file: unlike fs.watch this survives editors' rename-on-save and Kubernetes ConfigMap
   * symlink swaps, at the cost of up to intervalMs delay (plus the settle time).
   */
  watch(intervalMs = 1_000): void {
    if (!this.file || this.timer) return;
    // Compared with what was last read (not with the previous poll), so an edit made between the
    // load and the first poll is still seen.
    this.timer = setInterval(() => {
      if (this.inflight) return;
      if ((this.snapshot()?.key ?? null) !== this.seen) void this.reload('file');
    }, intervalMs);
    this.timer.unref();
  }

  private snapshot(): Snapshot | null {
    if (!this.file) return null;
    try {
      const st = statSync(this.file);
      const buf = readFileSync(this.file);
      const after = statSync(this.file);
      // Written to while being read: a key no later snapshot can match, and "just modified".
      if (after.ino !== st.ino || after.size !== st.size || after.mtimeMs !== st.mtimeMs || buf.length !== st.size) {
        return { key: `changing:${process.hrtime.bigint()}`, text: null, mtimeMs: Date.now() };
      }
      const hash = createHash('sha256').update(buf).digest('hex');
      return { key: `${st.ino}:${st.size}:${st.mtimeMs}:${hash}`, text: buf.toString('utf8'), mtimeMs: st.mtimeMs };
    } catch {
      return { key: 'missing', text: null, mtimeMs: 0 };
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
