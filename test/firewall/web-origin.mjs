// Stand-in for web servers on the internet: `node web-origin.mjs KEY CERT` serves HTTPS on 443 and plain
// HTTP on 80 and 8080, IPv4 and IPv6, each answering `origin-ok <scheme> <Host> <path>`; prints `ready`.
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';

const [keyFile, certFile] = process.argv.slice(2);
const answer = (scheme) => (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`origin-ok ${scheme} ${req.headers.host} ${req.url}\n`);
};
const servers = [
  [https.createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, answer('https')), 443],
  [http.createServer(answer('http')), 80],
  [http.createServer(answer('http')), 8080],
];
let pending = servers.length;
for (const [s, port] of servers) s.listen({ host: '::', port, ipv6Only: false }, () => --pending === 0 && process.stdout.write('ready\n'));
