#!/usr/bin/env node
// The floor: the least a Node process can do as a forward proxy, to show what Node itself costs per
// operation. A raw `net` server; the request head split by hand (no HTTP parser); CONNECT answered 200
// and piped both ways; an absolute-form request rewritten to origin-form and sent over one kept-alive
// upstream socket per client connection, whose bytes are piped back unparsed. No policy beyond a port
// allowlist (so the harness's deny check passes), no records, no limits, no timeouts: not a proxy to
// deploy, a lower bound to measure against.
//   node bench/lib/floor.mjs PORT [ALLOWED_PORT,...]   (listens on 127.0.0.1; prints "listening PORT")
import net from 'node:net';

const port = Number(process.argv[2] ?? 0);
const allowed = new Set((process.argv[3] ?? '').split(',').filter(Boolean).map(Number));
const HEAD_END = Buffer.from('\r\n\r\n');
const OK = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n');
const REFUSED = Buffer.from('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
const BAD = Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
const HWM = 128 * 1024;

function refuse(c, answer) {
  c.end(answer);
}

/** "host:port" or "[v6]:port" -> [host, port], or null. */
function authority(s) {
  const i = s.lastIndexOf(':');
  if (i <= 0) return null;
  const p = Number(s.slice(i + 1));
  const h = s.slice(0, i).replace(/^\[|\]$/g, '');
  return p > 0 && p < 65536 && h ? [h, p] : null;
}

function tunnel(c, head, rest) {
  const sp = head.indexOf(' ', 8);
  const a = sp > 0 ? authority(head.slice(8, sp)) : null;
  if (!a) return refuse(c, BAD);
  if (allowed.size && !allowed.has(a[1])) return refuse(c, REFUSED);
  const u = net.connect({ host: a[0], port: a[1], noDelay: true, highWaterMark: HWM });
  u.on('error', () => c.destroy());
  c.on('error', () => u.destroy());
  u.once('connect', () => {
    c.write(OK);
    if (rest.length) u.write(rest);
    c.pipe(u);
    u.pipe(c);
    c.resume();
  });
}

/** Plain HTTP on one client connection: each request head rewritten, bodies by Content-Length passed through. */
function forward(c, first) {
  let up = null;
  let upKey = '';
  let buf = first;
  let bodyLeft = 0;
  const pump = () => {
    while (buf.length) {
      if (bodyLeft > 0) {
        const n = Math.min(bodyLeft, buf.length);
        up.write(buf.subarray(0, n));
        bodyLeft -= n;
        buf = buf.subarray(n);
        continue;
      }
      const end = buf.indexOf(HEAD_END);
      if (end < 0) return;
      const head = buf.toString('latin1', 0, end + 4);
      buf = buf.subarray(end + 4);
      const sp1 = head.indexOf(' ');
      const sp2 = head.indexOf(' ', sp1 + 1);
      const url = head.slice(sp1 + 1, sp2);
      if (!url.startsWith('http://')) return refuse(c, BAD);
      const slash = url.indexOf('/', 7);
      const a = authority(slash < 0 ? url.slice(7) : url.slice(7, slash));
      if (!a || (allowed.size && !allowed.has(a[1]))) return refuse(c, a ? REFUSED : BAD);
      const key = `${a[0]}:${a[1]}`;
      if (key !== upKey) {
        up?.destroy();
        upKey = key;
        up = net.connect({ host: a[0], port: a[1], noDelay: true, highWaterMark: HWM });
        up.on('error', () => c.destroy());
        up.pipe(c, { end: true });
      }
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      bodyLeft = cl ? Number(cl[1]) : 0;
      up.write(head.slice(0, sp1 + 1) + (slash < 0 ? '/' : url.slice(slash)) + head.slice(sp2));
    }
  };
  c.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    pump();
  });
  c.on('error', () => up?.destroy());
  c.on('close', () => up?.destroy());
  pump();
}

const server = net.createServer({ noDelay: true, highWaterMark: HWM }, (c) => {
  let buf = Buffer.alloc(0);
  const onData = (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    const end = buf.indexOf(HEAD_END);
    if (end < 0) {
      if (buf.length > 16384) refuse(c, BAD);
      return;
    }
    c.off('data', onData);
    if (buf.toString('latin1', 0, 8) === 'CONNECT ') {
      c.pause();
      tunnel(c, buf.toString('latin1', 0, end), buf.subarray(end + 4));
    } else {
      forward(c, buf);
    }
  };
  c.on('data', onData);
  c.on('error', () => c.destroy());
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
