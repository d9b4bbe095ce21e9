/**
 * undici's timeout errors, told apart by their documented codes rather than by class, so that checking
 * an error does not load undici (it is loaded on the first plain-HTTP or inspected request).
 */
export function isConnectTimeout(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'UND_ERR_CONNECT_TIMEOUT';
}

/** Connect, response-head or body deadline passed: the caller answers 504. */
export function isUpstreamTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT';
}
