import { HostError, normalizeHost, type NormalizedHost } from './host.js';

/** Where a request wants to go: a normalised host and a port. */
export interface Target {
  host: NormalizedHost;
  port: number;
}

/** A malformed target. The message is one line, fixed text: safe to show a client, never echoes input. */
export class TargetError extends Error {
  override name = 'TargetError';
}

const MAX_AUTHORITY = 1100;
// Inside brackets: hex groups, dots for an IPv4 tail, and an optional RFC 6874 zone (`%25` + unreserved).
const BRACKETED = /^\[[0-9a-fA-F:.]+(?:%25[A-Za-z0-9_.~-]+)?\]$/;
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

function parsePort(text: string): number {
  // PORT, by hand (a regex test costs more than the rest of the parse): 1-5 digits, no leading zero.
  const n = text.length;
  let port = 0;
  for (let i = 0; i < n; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9 || (i === 0 && d === 0)) port = -1;
    if (port < 0) break;
    port = port * 10 + d;
  }
  if (n === 0 || n > 5 || port < 1 || port > 65535) throw new TargetError('port must be a decimal number from 1 to 65535');
  return port;
}

function parseHost(text: string): NormalizedHost {
  if (text.length === 0) throw new TargetError('empty host');
  if (text.startsWith('[') && !BRACKETED.test(text)) throw new TargetError('bad IPv6 literal');
  // '%' is allowed only as the zone introducer inside brackets (checked above); elsewhere it is an escape.
  if (!text.startsWith('[') && text.includes('%')) throw new TargetError('percent-escapes are not allowed in a host');
  try {
    return normalizeHost(text);
  } catch (err) {
    if (err instanceof HostError) throw new TargetError(`bad host: ${err.message}`);
    throw err;
  }
}

/** Split "host:port" / "[v6]:port" / "host" (when the port may be absent) without interpreting either part. */
function splitAuthority(authority: string, portRequired: boolean): { host: string; port: string | null } {
  if (authority.includes('@')) throw new TargetError('credentials (user@) are not allowed in the target');
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close === -1) throw new TargetError('unterminated IPv6 literal');
    const rest = authority.slice(close + 1);
    if (rest === '') {
      if (portRequired) throw new TargetError('a port is required (host:port)');
      return { host: authority, port: null };
    }
    if (rest[0] !== ':') throw new TargetError('unexpected text after IPv6 literal');
    return { host: authority.slice(0, close + 1), port: rest.slice(1) };
  }
  const colon = authority.lastIndexOf(':');
  if (colon === -1) {
    if (portRequired) throw new TargetError('a port is required (host:port)');
    return { host: authority, port: null };
  }
  const host = authority.slice(0, colon);
  if (host.includes(':')) throw new TargetError('IPv6 literals must be in brackets ([v6]:port)');
  return { host, port: authority.slice(colon + 1) };
}

function checkRaw(text: string): void {
  if (text.length === 0) throw new TargetError('empty target');
  if (text.length > MAX_AUTHORITY) throw new TargetError('target too long');
  // Control characters and space: never part of a target; the HTTP parser should have refused them already.
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) throw new TargetError('whitespace or control characters in target');
  }
}

/** Whether text has '/', '?', '#' or '\\' (an authority never does). */
function hasPathChar(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 47 || c === 63 || c === 35 || c === 92) return true;
  }
  return false;
}

/** CONNECT's authority-form: "host:port" or "[v6]:port"; the port is required. */
export function parseConnectTarget(authority: string): Target {
  checkRaw(authority);
  if (hasPathChar(authority)) throw new TargetError('CONNECT target must be host:port, without a path');
  const { host, port } = splitAuthority(authority, true);
  return { host: parseHost(host), port: parsePort(port!) };
}

interface UrlParts {
  target: Target;
  path: string;
  query: string;
}

/** Parse an absolute http(s) URL by hand: the path is kept byte-exact, never decoded or re-encoded. */
function parseAbsolute(url: string, schemes: Readonly<Record<string, number>>, allowFragment: boolean): UrlParts {
  // Nearly every proxy request starts with a lower-case "http://": skip the scheme regex for it.
  let scheme: string;
  let prefix: number;
  if (url.startsWith('http://')) {
    scheme = 'http';
    prefix = 7;
  } else {
    const m = SCHEME.exec(url);
    if (!m) throw new TargetError('expected an absolute http:// URL');
    scheme = m[1].toLowerCase();
    prefix = m[0].length;
  }
  const defaultPort = Object.hasOwn(schemes, scheme) ? schemes[scheme] : undefined;
  if (defaultPort === undefined) {
    if (scheme === 'https') {
      throw new TargetError('https:// URLs must be sent through the proxy with CONNECT, not as a plain request');
    }
    throw new TargetError('only http:// URLs are accepted');
  }
  let rest = url.slice(prefix);
  const hash = rest.indexOf('#');
  if (hash !== -1) {
    if (!allowFragment) throw new TargetError('fragments (#) are not allowed in a request target');
    rest = rest.slice(0, hash);
  }
  // The authority ends at the first '/' or '?'. A backslash stays inside it and is refused by the host
  // check, so a `\`-as-`/` reading (WHATWG) can never pick a different host than ours.
  const end = authorityEnd(rest);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const tail = end === -1 ? '' : rest.slice(end);
  const { host, port } = splitAuthority(authority, false);
  const target: Target = { host: parseHost(host), port: port === null ? defaultPort : parsePort(port) };
  const q = tail.indexOf('?');
  let path = q === -1 ? tail : tail.slice(0, q);
  const query = q === -1 ? '' : tail.slice(q);
  if (path === '') path = '/';
  return { target, path, query };
}

/** Index of the first '/' or '?' (where the authority ends), or -1. */
function authorityEnd(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 47 || c === 63) return i;
  }
  return -1;
}

const PROXY_SCHEMES: Readonly<Record<string, number>> = Object.freeze({ http: 80 });
const CHECK_SCHEMES: Readonly<Record<string, number>> = Object.freeze({ http: 80, https: 443 });

/** Absolute-form target of a plain HTTP proxy request: http:// only (default port 80), no userinfo or fragment. */
export function parseProxyUrl(url: string): { target: Target; path: string; query: string } {
  checkRaw(url);
  return parseAbsolute(url, PROXY_SCHEMES, false);
}

/** A target as typed for `check`: "host:port", "[v6]:port", or an http(s):// URL (default 80 / 443). */
export function parseCheckTarget(text: string): Target {
  checkRaw(text);
  if (SCHEME.test(text)) return parseAbsolute(text, CHECK_SCHEMES, true).target;
  return parseConnectTarget(text);
}

/** "host:port", with IPv6 literals in brackets. */
export function formatAuthority(t: Target): string {
  return t.host.kind === 'ip' && t.host.family === 6 ? `[${t.host.value}]:${t.port}` : `${t.host.value}:${t.port}`;
}

/** A Host header value (or an absolute-form URL's authority): "host", "host:port", "[v6]", "[v6]:port". */
export function parseHostHeader(text: string): { host: NormalizedHost; port: number | null } {
  checkRaw(text);
  if (hasPathChar(text)) throw new TargetError('a Host is host[:port], without a path');
  const { host, port } = splitAuthority(text, false);
  return { host: parseHost(host), port: port === null ? null : parsePort(port) };
}

/** The authority of an absolute-form request target ("http://host:port/path"), or null for origin form. */
export function absoluteAuthority(target: string): string | null {
  const m = SCHEME.exec(target);
  if (!m) return null;
  const rest = target.slice(m[0].length);
  const end = rest.search(/[/?#]/);
  return end === -1 ? rest : rest.slice(0, end);
}
