// The two Node reference proxies started next to agent-egress in `npm run bench`: the floor
// (bench/lib/floor.mjs) and the npm `proxy` package, installed outside the repo on first use.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess } from './proxy.mjs';

const LIB = fileURLToPath(new URL('.', import.meta.url));
/** Pinned exactly, like a devDependency would be; the shared harness installs the same major (proxy@4). */
export const NODE_PROXY_VERSION = '4.1.0';
const PKG_DIR = process.env.AE_BENCH_NODE_PROXY_DIR ?? '/tmp/bench-node-proxy';

/** Installs proxy@NODE_PROXY_VERSION into PKG_DIR unless that version is already there; null when npm fails. */
export function ensureNodeProxy(log) {
  const pkg = join(PKG_DIR, 'node_modules/proxy/package.json');
  try {
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).version === NODE_PROXY_VERSION) return PKG_DIR;
    mkdirSync(PKG_DIR, { recursive: true });
    log(`installing proxy@${NODE_PROXY_VERSION} into ${PKG_DIR}`);
    execFileSync('npm', ['install', '--prefix', PKG_DIR, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `proxy@${NODE_PROXY_VERSION}`], { stdio: 'ignore' });
    return PKG_DIR;
  } catch (err) {
    log(`node proxy package unavailable (${err.message}); skipping it`);
    return null;
  }
}

export function startFloor({ allowPorts, cpu, nodeArgs = [] }) {
  return startProcess({ label: 'floor', argv: [process.execPath, ...nodeArgs, join(LIB, 'floor.mjs')], portArgs: (p) => [String(p), allowPorts.join(',')], cpu });
}

export function startNodeProxy({ pkgDir, allowPorts, cpu }) {
  return startProcess({ label: 'node-proxy', argv: [process.execPath, join(LIB, 'node-proxy.mjs'), pkgDir], portArgs: (p) => [String(p), allowPorts.join(',')], cpu });
}
