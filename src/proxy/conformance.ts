import type { IncomingMessage } from 'node:http';

/** What checkHead reads: an IncomingMessage, or a head parsed without node:http (connect-head.ts). */
export type CheckedHead = Pick<IncomingMessage, 'httpVersionMajor' | 'httpVersionMinor' | 'rawHeaders'>;

/**
 * What HTTP/1.1 (RFC 9112) says a server must reject and Node's strict parser lets through. Checked
 * before anything else (no identity, no policy decision), so a malformed request is never acted on.
 */
export interface NonConformance {
  status: 400 | 505;
  /** One line for the client and the record; never header values. */
  message: string;
}

const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
/** method SP request-target SP HTTP-version, single spaces, after any empty lines RFC 9112 §2.2 lets a server skip. */
const REQUEST_LINE = new RegExp(`^(?:\\r?\\n)*${TOKEN} [^\\s]+ HTTP/[0-9]\\.[0-9]\\r?\\n`);

/**
 * The request line exactly as sent. llhttp accepts several spaces between its parts and a missing
 * version (as HTTP/0.9); RFC 9112 §3 has one SP each and a version. `line` includes its line end.
 */
export function checkRequestLine(line: string): NonConformance | null {
  if (REQUEST_LINE.test(line)) return null;
  return { status: 400, message: 'malformed request line: expected "METHOD target HTTP/1.1" with single spaces' };
}

/** Version and headers, on the parsed request: every request on a connection, pipelined or not. */
export function checkHead(req: CheckedHead): NonConformance | null {
  if (req.httpVersionMajor !== 1) {
    // llhttp reports a request line without a version as 0.9; HTTP/0.9 itself has no headers to check.
    if (req.httpVersionMajor === 0) return { status: 400, message: 'request line without HTTP/1.x version' };
    return { status: 505, message: `HTTP/${req.httpVersionMajor}.${req.httpVersionMinor} is not supported: this proxy speaks HTTP/1.1` };
  }
  let hosts = 0;
  let auths = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.length === 4 && n.toLowerCase() === 'host') hosts++;
    else if (n.length === 19 && n.toLowerCase() === 'proxy-authorization') auths++;
  }
  // Node keeps the first of repeated Host and Proxy-Authorization headers and drops the rest: which one
  // counts would then differ between the proxy and whatever reads the request next.
  if (hosts > 1) return { status: 400, message: 'more than one Host header' };
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400, CONNECT included. HTTP/1.0 has no Host.
  if (hosts === 0 && req.httpVersionMinor >= 1) return { status: 400, message: 'HTTP/1.1 request without a Host header' };
  if (auths > 1) return { status: 400, message: 'more than one Proxy-Authorization header' };
  return null;
}
