import { HostError, normalizeHost, type NormalizedHost } from '../net/host.js';
import { absoluteAuthority, parseHostHeader, TargetError, type Target } from '../net/target.js';
import type { Reason, TunnelProtocol } from '../policy/vocabulary.js';
import type { Sniff } from './sniff.js';

/**
 * Does what a tunnel's client sent first fit what was authorised? Pure: the caller peeked the bytes
 * (src/capture/peek.ts) and applies the answer. Names are compared normalised (case, trailing dot,
 * punycode), never resolved.
 */

export interface Expectation {
  /** The authorised destination (the CONNECT / SOCKS target, or the name transparent capture learnt). */
  target: Target;
  /** What the deciding rule lets the tunnel carry. */
  protocols: readonly TunnelProtocol[];
  /**
   * For an IP-literal target: whether a name the client sends (SNI, Host) is itself allowed for this
   * agent and port, to the address already dialled. null = allowed, else why not (one line).
   */
  nameOnAddress: (host: NormalizedHost) => string | null;
}

/** What the peek saw: a sniff result, or nothing decisive before the deadline / the client's end / the bound. */
export type Seen = Sniff | { kind: 'timeout' | 'closed' | 'limit'; bytes: number };

export type Judgement =
  | { ok: true; detail: Record<string, unknown> }
  | { ok: false; reason: Reason; message: string; detail: Record<string, unknown>; protocol: 'tls' | 'http' | 'other' };

const MAX_SHOWN = 255;
const shown = (s: string) => s.slice(0, MAX_SHOWN);

export function judge(seen: Seen, exp: Expectation, timeoutMs: number): Judgement {
  const allows = (p: TunnelProtocol) => exp.protocols.includes(p) || exp.protocols.includes('any');
  const refuse = (reason: Reason, message: string, detail: Record<string, unknown>, protocol: 'tls' | 'http' | 'other' = 'other'): Judgement => ({
    ok: false,
    reason,
    message,
    detail,
    protocol,
  });
  switch (seen.kind) {
    case 'tls': {
      const detail: Record<string, unknown> = { protocol: 'tls', sni: seen.sni === null ? null : shown(seen.sni) };
      if (!allows('tls')) return refuse('protocol_not_allowed', 'the rule does not allow TLS through this tunnel', detail, 'tls');
      if (seen.sni === null) return { ok: true, detail };
      const why = nameMismatch(seen.sni, exp);
      return why === null ? { ok: true, detail } : refuse('sni_mismatch', `TLS names ${shown(seen.sni)}: ${why}`, detail, 'tls');
    }
    case 'http': {
      const detail: Record<string, unknown> = { protocol: 'http', hostHeader: seen.host === null ? null : shown(seen.host) };
      if (!allows('http')) return refuse('protocol_not_allowed', 'the rule does not allow plain HTTP through this tunnel', detail, 'http');
      if (seen.host === null) return refuse('host_mismatch', 'the request has no Host header', detail, 'http');
      const hostWhy = authorityMismatch(seen.host, exp);
      if (hostWhy !== null) return refuse('host_mismatch', `Host ${shown(seen.host)}: ${hostWhy}`, detail, 'http');
      // An origin reads an absolute-form target's authority instead of Host (RFC 9112 §3.2.2): it must match too.
      const abs = absoluteAuthority(seen.target);
      if (abs !== null) {
        detail.targetAuthority = shown(abs);
        const why = authorityMismatch(abs, exp);
        if (why !== null) return refuse('host_mismatch', `request target names ${shown(abs)}: ${why}`, detail, 'http');
      }
      return { ok: true, detail };
    }
    case 'ssh':
      return allows('ssh') ? { ok: true, detail: { protocol: 'ssh' } } : refuse('protocol_not_allowed', 'the rule does not allow SSH through this tunnel', { protocol: 'ssh' });
    case 'other':
      return allows('any')
        ? { ok: true, detail: { protocol: 'other' } }
        : refuse('protocol_not_allowed', 'the tunnel carries a protocol its rule does not allow', { protocol: 'other' });
    case 'malformed':
      return refuse('bad_request', `malformed ${seen.protocol === 'tls' ? 'TLS ClientHello' : 'HTTP request head'}: ${seen.error}`, { protocol: seen.protocol, error: seen.error }, seen.protocol);
    case 'timeout':
      return refuse(
        'protocol_not_allowed',
        seen.bytes === 0 ? `the client sent nothing within ${timeoutMs} ms` : `no recognisable protocol within ${timeoutMs} ms`,
        { protocol: 'none', bytes: seen.bytes },
      );
    case 'closed':
      return refuse('protocol_not_allowed', 'the client closed before sending a recognisable protocol', { protocol: 'none', bytes: seen.bytes });
    case 'limit':
      return refuse('protocol_not_allowed', 'no recognisable protocol within the first bytes', { protocol: 'other', bytes: seen.bytes });
    case 'more':
      // The peek never hands over an undecided sniff; treat it as a bug and fail closed.
      return refuse('protocol_not_allowed', 'tunnel content could not be checked', { protocol: 'none' });
  }
}

/** Host header or absolute-form authority: the name must match, and the port when one is given. */
function authorityMismatch(text: string, exp: Expectation): string | null {
  let a;
  try {
    a = parseHostHeader(text);
  } catch (e) {
    if (e instanceof TargetError) return `not a valid host (${e.message})`;
    throw e;
  }
  if (a.port !== null && a.port !== exp.target.port) return `port ${a.port} is not the tunnel's port ${exp.target.port}`;
  return nameMismatch(a.host, exp);
}

/**
 * A name (SNI or Host) against the authorised target: equal when the target is a name; when the target
 * is an IP literal, an equal address, or a name the policy itself allows to that address.
 */
function nameMismatch(raw: string | NormalizedHost, exp: Expectation): string | null {
  let host: NormalizedHost;
  if (typeof raw === 'string') {
    try {
      host = normalizeHost(raw);
    } catch (e) {
      if (e instanceof HostError) return 'not a valid host name';
      throw e;
    }
  } else host = raw;
  const t = exp.target.host;
  if (host.kind === t.kind && host.value === t.value) return null;
  if (t.kind === 'name') return `the tunnel was authorised for ${t.value}`;
  if (host.kind === 'ip') return `the tunnel was authorised for ${t.value}`;
  return exp.nameOnAddress(host);
}

export type Named =
  | { ok: true; target: Target; protocol: 'tls' | 'http' }
  | { ok: false; reason: Reason; message: string; detail: Record<string, unknown>; protocol: 'tls' | 'http' | 'other' };

/**
 * Transparent capture: where a connection means to go, read from its first bytes (the ClientHello's
 * SNI, or the Host of a plain HTTP request), on the port it was captured from. Anything that names no
 * destination is `no_name`; a Host with another port than the captured one is `host_mismatch`.
 */
export function nameFromContent(seen: Seen, port: number, timeoutMs: number): Named {
  const noName = (message: string, detail: Record<string, unknown>, protocol: 'tls' | 'http' | 'other' = 'other'): Named => ({
    ok: false,
    reason: 'no_name',
    message,
    detail,
    protocol,
  });
  switch (seen.kind) {
    case 'tls': {
      if (seen.sni === null) return noName('the TLS ClientHello names no server (no SNI)', { protocol: 'tls', sni: null }, 'tls');
      try {
        return { ok: true, target: { host: normalizeHost(seen.sni), port }, protocol: 'tls' };
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        return noName('the SNI is not a valid host name', { protocol: 'tls', sni: shown(seen.sni) }, 'tls');
      }
    }
    case 'http': {
      const detail = { protocol: 'http', hostHeader: seen.host === null ? null : shown(seen.host) };
      if (seen.host === null) return noName('the request has no Host header', detail, 'http');
      let a;
      try {
        a = parseHostHeader(seen.host);
      } catch (e) {
        if (!(e instanceof TargetError)) throw e;
        return noName(`the Host is not a valid host (${e.message})`, detail, 'http');
      }
      if (a.port !== null && a.port !== port) {
        return { ok: false, reason: 'host_mismatch', message: `Host ${shown(seen.host)} names port ${a.port}, but the connection was to port ${port}`, detail, protocol: 'http' };
      }
      return { ok: true, target: { host: a.host, port }, protocol: 'http' };
    }
    case 'malformed':
      return noName(`malformed ${seen.protocol === 'tls' ? 'TLS ClientHello' : 'HTTP request head'}: ${seen.error}`, { protocol: seen.protocol, error: seen.error }, seen.protocol);
    case 'ssh':
      return noName('SSH names no destination', { protocol: 'ssh' });
    case 'other':
      return noName('the connection names no destination (neither TLS nor HTTP)', { protocol: 'other' });
    case 'timeout':
      return noName(seen.bytes === 0 ? `the client sent nothing within ${timeoutMs} ms` : `no name within ${timeoutMs} ms`, { protocol: 'none', bytes: seen.bytes });
    case 'closed':
      return noName('the client closed before naming a destination', { protocol: 'none', bytes: seen.bytes });
    case 'limit':
    case 'more':
      return noName('no name within the first bytes', { protocol: 'other', bytes: seen.kind === 'limit' ? seen.bytes : 0 });
  }
}
