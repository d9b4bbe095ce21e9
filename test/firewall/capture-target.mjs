// Stands in for a redirect target (the transparent listener, the filtering resolver): it says where it was
// reached. `node capture-target.mjs HOST COUNT` binds COUNT consecutive ports on HOST (TCP and UDP each),
// prints `ready FIRST`; TCP gets `captured HOST:PORT from REMOTE`, UDP `captured:PORT`.
import net from 'node:net';
import dgram from 'node:dgram';

const [host, countText = '1'] = process.argv.slice(2);
const count = Number(countText);
const v6 = net.isIPv6(host);

function bindTcp(port) {
  return new Promise((resolve, reject) => {
    const s = net.createServer((c) => {
      c.on('error', () => {});
      c.end(`captured ${c.localAddress}:${c.localPort} from ${c.remoteAddress}\n`);
    });
    s.once('error', reject);
    s.listen({ host, port, ipv6Only: v6 }, () => resolve(s));
  });
}

function bindUdp(port) {
  return new Promise((resolve, reject) => {
    const u = dgram.createSocket(v6 ? 'udp6' : 'udp4');
    u.on('message', (_m, rinfo) => u.send(`captured:${port}`, rinfo.port, rinfo.address));
    u.once('error', reject);
    u.bind(port, host, () => resolve(u));
  });
}

// The first port comes from the kernel; the next ones must be free in this fresh namespace, else start over.
for (let attempt = 0; attempt < 20; attempt++) {
  const first = await bindTcp(0);
  const base = first.address().port;
  const opened = [first];
  try {
    for (let i = 1; i < count; i++) opened.push(await bindTcp(base + i));
    for (let i = 0; i < count; i++) opened.push(await bindUdp(base + i));
    process.stdout.write(`ready ${base}\n`);
    break;
  } catch {
    for (const s of opened) s.close();
  }
}
