import { statSync } from 'node:fs';
import { applyFlags, compilePolicy, loadPolicyFile, type PolicyFlags } from '../policy/index.js';
import type { PolicyHolder, PolicyState } from '../policy/holder.js';
import { PolicyError, type CompiledPolicy, type PolicySpec } from '../policy/types.js';

/** Builds the policy from an optional file plus CLI flags; the file part can be reloaded. */
export function buildPolicy(
  file: string | undefined,
  flags: PolicyFlags,
  env: NodeJS.ProcessEnv = process.env,
  opts: BuildOptions = {},
): CompiledPolicy {
  const base: PolicySpec | null = file ? loadPolicyFile(file) : null;
  const spec = applyFlags(base, flags);
  if (!opts.inspectCa) requireInspectionCa(spec);
  return compilePolicy(spec, env, { secretValues: opts.secretValues });
}

export interface BuildOptions {
  /** An inspection CA comes from the command line (--inspect-ca), so the policy need not name one. */
  inspectCa?: boolean;
  /** false: do not read secret values (check, policy validate). */
  secretValues?: boolean;
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

  constructor(
    private readonly file: string | undefined,
    private readonly flags: PolicyFlags,
    private readonly onEvent: (e: { ok: boolean; trigger: string; hash?: string; error?: string }) => void = () => {},
    private readonly opts: BuildOptions = {},
  ) {
    this.seen = this.fingerprint();
    this.active = buildPolicy(file, flags, process.env, opts);
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

  async reload(trigger: 'file' | 'signal' | 'api'): Promise<{ ok: true; hash: string } | { ok: false; error: string }> {
    let next: CompiledPolicy;
    this.seen = this.fingerprint();
    try {
      next = buildPolicy(this.file, this.flags, process.env, this.opts);
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
   * Poll the file's stat: unlike fs.watch this survives editors' rename-on-save and Kubernetes
   * ConfigMap symlink swaps, at the cost of up to intervalMs delay.
   */
  watch(intervalMs = 1_000): void {
    if (!this.file || this.timer) return;
    // Compared with what was last read (not with the previous poll), so an edit made between the
    // load and the first poll is still seen.
    this.timer = setInterval(() => {
      if (this.fingerprint() !== this.seen) void this.reload('file');
    }, intervalMs);
    this.timer.unref();
  }

  private fingerprint(): string | null {
    if (!this.file) return null;
    try {
      const st = statSync(this.file);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
