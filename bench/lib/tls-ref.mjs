// Reference TLS server, run as its own process (pinned like a proxy): each connection is one full TLS 1.3
// handshake with the given certificate, then the server ends it. Its CPU per connection is the bench's
// unit of "one TLS handshake" (server side, ECDSA P-256, as the inspection leaves are), accept and close
// included. Prints one JSON line with its port, then serves until killed.
import { createServer } from 'node:tls';
import { readFileSync } from 'node:fs';

const [certFile, keyFile] = process.argv.slice(2);
const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.3' }, (s) => {
  s.on('error', () => s.destroy());
  s.end();
});
server.on('tlsClientError', () => undefined);
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n'));
process.on('SIGTERM', () => process.exit(0));
