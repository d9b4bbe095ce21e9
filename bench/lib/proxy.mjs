// Starts the real agent-egress CLI as a child process (pinned to one core when taskset exists) and stops it.
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// AE_BENCH_CLI points at another build (A/B comparisons of a change); default: this checkout.
export const CLI = process.env.AE_BENCH_CLI ?? `${ROOT}bin/agent-egress.js`;

/**
 * The V8 flags agent-egress ships with (Dockerfile ENTRYPOINT, `npm start`): a 4 MiB semi-space caps the
 * young generation at about 12 MiB instead of 48 (docs/performance.md, memory); the idle reclaim uses
 * vm.measureMemory, which Node 20 announces as experimental. Keep the three in step.
 */
export const PRODUCTION_NODE_ARGS = ['--max-semi-space-size=4', '--disable-warning=ExperimentalWarning'];

export function hasTaskset() {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Flags `serve --help` advertises, so the bench adapts while the CLI grows (store flags, workers). */
export function serveFlags() {
  const help = execFileSync(process.execPath, [CLI, 'serve', '--help'], { encoding: 'utf8' });
  return new Set(help.match(/--[a-z][a-z-]+/g));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port, child, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`proxy exited early (${child.exitCode})`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`proxy did not listen on ${port} within ${ms} ms`);
}

/**
 * Runs `node [nodeArgs] bin/agent-egress.js serve --listen 127.0.0.1:PORT ...args` under a raised fd limit,
 * pinned to `cpu` (or unpinned when cpu is null). Resolves once the port accepts connections.
 */
export function startProxy({ args, cpu = 0, nodeArgs = [], fdLimit = 65536, stderrFile = null, env }) {
  return startProcess({ label: 'agent-egress', argv: [process.execPath, ...nodeArgs, CLI, 'serve'], portArgs: (port) => ['--listen', `127.0.0.1:${port}`, ...args], cpu, fdLimit, stderrFile, env });
}

/** Any proxy process: `argv ...portArgs(port)` on a free port, same pinning, fd limit and stop as agent-egress. */
export async function startProcess({ label, argv, portArgs, cpu = 0, fdLimit = 65536, stderrFile = true, env }) {
  const port = await freePort();
  const cmd = [...argv, ...portArgs(port)];
  if (cpu !== null && hasTaskset()) cmd.unshift('taskset', '-c', String(cpu));
  // `exec` keeps the proxy's pid equal to the child's, so /proc readings see the proxy itself.
  const child = spawn('sh', ['-c', `ulimit -n ${fdLimit} 2>/dev/null; exec "$@"`, 'sh', ...cmd], {
    stdio: ['ignore', 'ignore', stderrFile ? 'pipe' : 'ignore'],
    env: env ? { ...process.env, ...env } : process.env,
  });
  let stderr = '';
  child.stderr?.on('data', (c) => {
    if (stderr.length < 20_000) stderr += c;
  });
  await waitForPort(port, child, 15_000);
  return {
    label,
    port,
    pid: child.pid,
    command: (env ? Object.entries(env).map(([k, v]) => `${k}=${v} `).join('') : '') + cmd.join(' '),
    stderr: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    /** SIGTERM (graceful: flushes records, writes --cpu-prof), SIGKILL after graceMs. */
    stop(graceMs = 15_000) {
      if (child.exitCode !== null) return Promise.resolve(child.exitCode);
      return new Promise((resolve) => {
        const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
        child.once('exit', (code) => {
          clearTimeout(kill);
          resolve(code);
        });
        child.kill('SIGTERM');
      });
    },
  };
}
