#!/usr/bin/env node
// Inspection costs, in process: first mint of a leaf (key reuse, X.509 signing, TLS context) and a TLS
// handshake with a cached leaf, against a local TLS client. `--json` prints one JSON object.
//   node bench/inspect-mint.mjs [--quick] [--json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { parseArgs } from 'node:util';
import { createInspectionCa, loadInspectionCa } from '../dist/inspect/ca.js';
import { LeafMinter } from '../dist/inspect/mint.js';

const { values: opt } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
const N = opt.quick ? 50 : 300;
const dir = mkdtempSync(join(tmpdir(), 'ae-bench-inspect-'));
await createInspectionCa(dir, { days: 2, force: false });
const ca = await loadInspectionCa(join(dir, 'inspect-ca.pem'), join(dir, 'inspect-ca-key.pem'));
const minter = new LeafMinter(ca, N * 2);
await minter.contextFor('warmup.example', false);

let t = performance.now();
for (let i = 0; i < N; i++) await minter.contextFor(`host${i}.example`, false);
const firstMintMs = (performance.now() - t) / N;

const name = 'cached.example';
await minter.contextFor(name, false);
const server = createServer({ SNICallback: (sni, cb) => Promise.resolve(minter.contextFor(sni, false)).then((c) => cb(null, c), cb) }, (s) => s.end());
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const handshake = () =>
  new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: name, ca: ca.certPem }, () => {
      s.destroy();
      resolve();
    });
    s.once('error', reject);
  });
await handshake();
t = performance.now();
for (let i = 0; i < N; i++) await handshake();
const cachedHandshakeMs = (performance.now() - t) / N;
server.close();
rmSync(dir, { recursive: true, force: true });

const out = { leaves: N, firstMintMs: Math.round(firstMintMs * 1000) / 1000, cachedHandshakeMs: Math.round(cachedHandshakeMs * 1000) / 1000 };
if (opt.json) console.log(JSON.stringify(out));
else console.log(`first mint ${out.firstMintMs} ms per name; TLS handshake with a cached leaf ${out.cachedHandshakeMs} ms (client + server, loopback)`);
