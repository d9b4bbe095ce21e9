// One direct attempt, bounded: `node probe.mjs tcp|udp HOST PORT` prints {"ok":bool,"error"?:string}.
import net from 'node:net';
import dgram from 'node:dgram';

const [proto, host, portText] = process.argv.slice(2);
const port = Number(portText);
const done = (r) => {
  process.stdout.write(JSON.stringify(r) + '\n');
  process.exit(0);
};
setTimeout(() => done({ ok: false, error: 'timeout' }), 3000).unref();

if (proto === 'tcp') {
  const s = net.connect({ host, port }, () => {
    s.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n');
  });
  let body = '';
  s.setEncoding('utf8');
  s.on('data', (d) => (body += d));
  s.on('end', () => done({ ok: body.includes('origin-ok'), body }));
  s.on('error', (e) => done({ ok: false, error: e.code ?? e.message }));
} else {
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  s.on('error', (e) => done({ ok: false, error: e.code ?? e.message }));
  s.on('message', (m) => done({ ok: m.toString() === 'echo:ping', body: m.toString() }));
  // connect() so an ICMP port-unreachable comes back as ECONNREFUSED instead of silence.
  s.connect(port, host, () => s.send('ping'));
}
