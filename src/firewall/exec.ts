import { spawn } from 'node:child_process';

/** A rule tool failed, was missing or hung: the caller must treat the rule state as unchanged-or-unknown. */
export class FirewallExecError extends Error {
  override name = 'FirewallExecError';
  constructor(
    message: string,
    readonly command: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 15_000;

/** Run a rule tool with `input` on stdin; any non-zero exit, signal or timeout is a FirewallExecError. */
export function runTool(cmd: string, args: string[], input = '', timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ExecResult> {
  const shown = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (err: FirewallExecError | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve({ stdout, stderr });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new FirewallExecError(`${shown}: timed out after ${timeoutMs} ms`, shown, stderr, null));
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'ENOENT' ? `${cmd} is not installed (or not on PATH)` : e.message;
      finish(new FirewallExecError(`${shown}: ${why}`, shown, stderr, null));
    });
    child.on('close', (code, signal) => {
      if (code === 0) finish(null);
      else {
        const why = stderr.trim() || (signal ? `killed by ${signal}` : `exit code ${code}`);
        finish(new FirewallExecError(`${shown} failed: ${why}`, shown, stderr, code));
      }
    });
    // EPIPE when the tool exits before reading stdin is reported through 'close' with its exit code.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}
