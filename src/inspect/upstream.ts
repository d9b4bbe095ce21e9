import { readFileSync } from 'node:fs';
import { connect as tlsConnect, createSecureContext, rootCertificates, type SecureContext, type TLSSocket } from 'node:tls';
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

/** Upstream TLS sessions kept per trust set: enough for the origins a proxy inspects at once. */
const MAX_SESSIONS = 512;

interface UpstreamTrust {
  /** One context for every upstream connection: building one from ~150 roots costs milliseconds. */
  readonly context: SecureContext;
  /** The last session ticket per (address, port, name), so the next connection resumes. */
  readonly sessions: Map<string, Buffer>;
}

const TRUST = new WeakMap<readonly string[], UpstreamTrust>();

/** The context (and session cache) for a list of roots, built on first use; the list is read once at start. */
function trustFor(ca: readonly string[]): UpstreamTrust {
  let t = TRUST.get(ca);
  if (t === undefined) {
    t = { context: createSecureContext({ ca: ca as string[], minVersion: 'TLSv1.2' }), sessions: new Map() };
    TRUST.set(ca, t);
  }
  return t;
}

/**
 * Connect to a vetted address and open TLS with SNI = the requested name, verifying the origin's
 * certificate chain and name exactly as the agent's own client would have. No lookup happens here.
 * A session is resumed only towards the same address, port and name it was first verified for.
 */
export async function connectUpstreamTls(
  addresses: string[],
  port: number,
  name: string,
  isIp: boolean,
  ca: readonly string[],
  timeoutMs: number,
): Promise<{ socket: TLSSocket; address: string }> {
  const d = await dialVetted(addresses, port, timeoutMs);
  const trust = trustFor(ca);
  const key = `${d.address}|${port}|${name}`;
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      socket: d.socket,
      // SNI carries names only (RFC 6066); the certificate check still uses `host`.
      servername: isIp ? undefined : name,
      host: name,
      secureContext: trust.context,
      session: trust.sessions.get(key),
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
    });
    // Only a ticket from a handshake Node has verified is kept (TLS 1.2 may hand it over before that).
    let ticket: Buffer | null = null;
    const keep = (session: Buffer): void => {
      trust.sessions.delete(key);
      trust.sessions.set(key, session);
      if (trust.sessions.size > MAX_SESSIONS) trust.sessions.delete(trust.sessions.keys().next().value as string);
    };
    socket.on('session', (session: Buffer) => {
      if (socket.authorized) keep(session);
      else ticket = session;
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DialError(true, `TLS handshake with ${d.address} timed out`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      if (ticket !== null && socket.authorized) keep(ticket);
      ticket = null;
      socket.removeAllListeners('error');
      resolve({ socket, address: d.address });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      trust.sessions.delete(key);
      socket.destroy();
      d.socket.destroy();
      reject(new UpstreamTlsError(`TLS to ${name} (${d.address}): ${err.code ?? 'error'}: ${err.message.slice(0, 160)}`, err.code ?? 'TLS_ERROR'));
    });
  });
}
