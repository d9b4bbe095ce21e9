// A TCP service (HTTP, answers like origin.mjs) and a UDP echo on one port: `node listen.mjs HOST [PORT]`.
// Binds port 0 unless told, prints `ready PORT`. Stands in for local services (databases, admin ports,
// an agent's own dev server), run as whichever user starts it.
import http from 'node:http';
import dgram from 'node:dgram';
import net from 'node:net';

const [host, portText = '0'] = process.argv.slice(2);
const web = http.createServer((req, res) => res.end(`origin-ok ${req.method} ${req.url}\n`));
web.listen({ host, port: Number(portText), ipv6Only: net.isIPv6(host) }, () => {
  const { port } = web.address();
  const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  udp.on('message', (m, rinfo) => udp.send(`echo:${m}`, rinfo.port, rinfo.address));
  udp.bind(port, host, () => process.stdout.write(`ready ${port}\n`));
});
