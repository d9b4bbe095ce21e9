import { parseList, Token } from 'structured-headers';
import { expect } from 'vitest';

/** Status and headers (lower-cased names, repeated names kept in order) of a raw HTTP/1.1 response. */
export function parseHead(raw: string): { status: number; headers: Map<string, string[]>; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  expect(end, `no complete response head in ${JSON.stringify(raw.slice(0, 200))}`).toBeGreaterThan(0);
  const [line, ...fields] = raw.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(line)?.[1]);
  const headers = new Map<string, string[]>();
  for (const f of fields) {
    const i = f.indexOf(':');
    const k = f.slice(0, i).trim().toLowerCase();
    headers.set(k, [...(headers.get(k) ?? []), f.slice(i + 1).trim()]);
  }
  return { status, headers, body: raw.slice(end + 4) };
}

/**
 * Proxy-Status parsed with an independent RFC 8941 parser: exactly one field, a list whose first member is
 * the token agent-egress carrying the expected error token, and details naming the decision id and reason.
 */
export function expectProxyStatus(headers: Map<string, string[]>, error: string, reason: string): { details: string; decision: string } {
  const fields = headers.get('proxy-status') ?? [];
  expect(fields, 'one Proxy-Status field').toHaveLength(1);
  const list = parseList(fields[0]);
  expect(list.length).toBeGreaterThanOrEqual(1);
  const [name, params] = list[0];
  expect(name).toBeInstanceOf(Token);
  expect(String(name)).toBe('agent-egress');
  const err = params.get('error');
  expect(err).toBeInstanceOf(Token);
  expect(String(err)).toBe(error);
  const details = params.get('details');
  expect(typeof details).toBe('string');
  const decision = headers.get('x-agent-egress-decision')?.[0] ?? '';
  expect(decision).toMatch(/^[0-9a-z]{18}$/);
  expect(details as string).toContain(`decision ${decision}`);
  expect(details as string).toContain(`reason ${reason}`);
  expect(headers.get('x-agent-egress-reason')).toEqual([reason]);
  return { details: details as string, decision };
}
