// Benchmark origin, run as its own process (pinned next to the load generator, away from the proxy):
// HTTP and HTTPS with /small (100 B) and /large (10 MiB), plus a raw TCP port that holds idle tunnels.
// Prints one JSON line with its ports, then serves until killed.
import { createServer as createHttp } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { createServer as createTcp } from 'node:net';
import { readFileSync } from 'node:fs';

const [certFile, keyFile] = process.argv.slice(2);
const SMALL = Buffer.alloc(100, 'a');
const LARGE = Buffer.alloc(10 * 1024 * 1024, 'b');
const SMALL_HEAD = { 'content-type': 'application/octet-stream', 'content-length': String(SMALL.length) };
const LARGE_HEAD = { 'content-type': 'application/octet-stream', 'content-length': String(LARGE.length) };

function handler(req, res) {
  if (req.url === '/large') {
    res.writeHead(200, LARGE_HEAD);
    res.end(LARGE);
  } else if (req.url === '/small') {
    res.writeHead(200, SMALL_HEAD);
    res.end(SMALL);
  } else {
    res.writeHead(404, { 'content-length': '0' });
    res.end();
  }
}

// Generous timeouts: the idle-tunnel measurement keeps connections open for a while.
const httpOpts = { keepAliveTimeout: 60_000, headersTimeout: 120_000, requestTimeout: 0 };
const http = createHttp(httpOpts, handler);
const https = createHttps({ ...httpOpts, cert: readFileSync(certFile), key: readFileSync(keyFile) }, handler);
// Raw TCP: accepts and holds (echoes whatever arrives) — idle tunnels end here.
const tcp = createTcp((s) => {
  s.on('error', () => s.destroy());
  s.pipe(s);
});
const listen = (srv) => new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv.address().port)));
const ports = { http: await listen(http), https: await listen(https), tcp: await listen(tcp) };
process.stdout.write(JSON.stringify(ports) + '\n');
process.on('SIGTERM', () => process.exit(0));
