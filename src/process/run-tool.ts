import { spawn } from 'node:child_process';

/**
 * An external tool (nft, iptables-restore, openssl) failed, was missing or hung. For the firewall this
 * means the rule state is unchanged-or-unknown; for certs, that nothing usable was written.
 */
export class ToolExecError extends Error {
  override name = 'ToolExecError';
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

/** Run a tool with `input` on stdin; any non-zero exit, signal or timeout is a ToolExecError. */
export function runTool(cmd: string, args: string[], input = '', timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ExecResult> {
  const shown = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (err: ToolExecError | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve({ stdout, stderr });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new ToolExecError(`${shown}: timed out after ${timeoutMs} ms`, shown, stderr, null));
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'ENOENT' ? `${cmd} is not installed (or not on PATH)` : e.message;
      finish(new ToolExecError(`${shown}: ${why}`, shown, stderr, null));
    });
    child.on('close', (code, signal) => {
      if (code === 0) finish(null);
      else {
        const why = stderr.trim() || (signal ? `killed by ${signal}` : `exit code ${code}`);
        finish(new ToolExecError(`${shown} failed: ${why}`, shown, stderr, code));
      }
    });
    // EPIPE when the tool exits before reading stdin is reported through 'close' with its exit code.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}
