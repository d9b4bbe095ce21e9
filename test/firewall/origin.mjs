// Stand-in for the internet: HTTP on :80 (or argv[2]) and a UDP echo on :53, IPv4 and IPv6.
import http from 'node:http';
import dgram from 'node:dgram';
import { networkInterfaces } from 'node:os';

const web = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`origin-ok ${req.method} ${req.url}\n`);
});
// One UDP socket per address: a wildcard socket would answer from the route's source address,
// which a connected client socket ignores.
const addrs = Object.values(networkInterfaces())
  .flat()
  .filter((a) => a && !a.address.startsWith('fe80'))
  .map((a) => a.address);
let pending = 1 + addrs.length;
const ready = () => {
  if (--pending === 0) process.stdout.write('ready\n');
};
web.listen({ host: '::', port: Number(process.argv[2] ?? 80), ipv6Only: false }, ready);
for (const addr of addrs) {
  const s = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, rinfo) => s.send(`echo:${m}`, rinfo.port, rinfo.address));
  s.bind(53, addr, ready);
}
