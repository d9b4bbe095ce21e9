/** What a Proxy-Authorization header says, without judging it (the policy judges). */
export interface ProxyCredentials {
  present: boolean;
  username?: string;
  password?: string;
}

const NONE: ProxyCredentials = { present: false };

export function parseProxyAuthorization(header: string | string[] | undefined): ProxyCredentials {
  if (header === undefined) return NONE;
  // Two headers is ambiguous: present, but no usable credentials, so identification fails closed.
  if (Array.isArray(header)) return { present: true };
  const m = /^basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(header);
  if (!m) return { present: true };
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return { present: true };
  return { present: true, username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
