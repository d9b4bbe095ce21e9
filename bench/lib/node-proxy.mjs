#!/usr/bin/env node
// The npm `proxy` package (TooTallNate, v4), the plain-Node anchor the shared harness also runs, with the
// same port allowlist as the floor through the package's per-request hook (`authenticate`, called for
// CONNECT and absolute-form requests alike). Not a dependency of this repo: bench/lib/anchors.mjs
// installs it outside the tree (AE_BENCH_NODE_PROXY_DIR, default /tmp/bench-node-proxy).
//   node bench/lib/node-proxy.mjs PKG_DIR PORT [ALLOWED_PORT,...]
import http from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, portArg, allowArg = ''] = process.argv.slice(2);
const { createProxy } = await import(pathToFileURL(join(pkgDir, 'node_modules/proxy/dist/proxy.js')).href);
const allowed = new Set(allowArg.split(',').filter(Boolean).map(Number));

function portOf(req) {
  if (req.method === 'CONNECT') return Number((req.url ?? '').slice((req.url ?? '').lastIndexOf(':') + 1));
  try {
    const u = new URL(req.url ?? '');
    return u.protocol === 'http:' ? Number(u.port || 80) : -1;
  } catch {
    return -1;
  }
}

const server = createProxy(http.createServer());
server.authenticate = (req) => allowed.size === 0 || allowed.has(portOf(req));
server.listen(Number(portArg ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
