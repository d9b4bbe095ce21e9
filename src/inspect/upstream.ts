import { readFileSync } from 'node:fs';
import { connect as tlsConnect, rootCertificates, type TLSSocket } from 'node:tls';
import { dialVetted, DialError } from '../proxy/dial.js';

/** The origin's certificate did not verify (or the TLS handshake failed): 502 upstream_tls. */
export class UpstreamTlsError extends Error {
  override name = 'UpstreamTlsError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Where distributions keep the system trust store (update-ca-certificates and its kin write these). */
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

/**
 * The roots an inspected connection's origin certificate must chain to: Node's bundled roots, the
 * system bundle when there is one, and every `--upstream-ca` file. Read once at start.
 */
export function upstreamTrust(extraFiles: readonly string[]): string[] {
  const roots = [...rootCertificates];
  for (const f of SYSTEM_BUNDLES) {
    try {
      roots.push(readFileSync(f, 'utf8'));
      break;
    } catch {
      // not this distribution's path
    }
  }
  for (const f of extraFiles) roots.push(readFileSync(f, 'utf8'));
  return roots;
}

/**
 * Connect to a vetted address and open TLS with SNI = the requested name, verifying the origin's
 * certificate chain and name exactly as the agent's own client would have. No lookup happens here.
 */
export async function connectUpstreamTls(
  addresses: string[],
  port: number,
  name: string,
  isIp: boolean,
  ca: string[],
  timeoutMs: number,
): Promise<{ socket: TLSSocket; address: string }> {
  const d = await dialVetted(addresses, port, timeoutMs);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      socket: d.socket,
      // SNI carries names only (RFC 6066); the certificate check still uses `host`.
      servername: isIp ? undefined : name,
      host: name,
      ca,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DialError(true, `TLS handshake with ${d.address} timed out`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve({ socket, address: d.address });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      d.socket.destroy();
      reject(new UpstreamTlsError(`TLS to ${name} (${d.address}): ${err.code ?? 'error'}: ${err.message.slice(0, 160)}`, err.code ?? 'TLS_ERROR'));
    });
  });
}
