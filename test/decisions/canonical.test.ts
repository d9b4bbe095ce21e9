import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalRecordJson } from '../../src/decisions/chain.js';
import { startRecord, type DecisionRecord } from '../../src/decisions/record.js';

describe('canonicalRecordJson', () => {
  const base = () => startRecord('[::1]:5555', 'CONNECT', 'api.example.com', 443, 'abcdef0123456789');
  const cases: [string, (r: DecisionRecord) => void][] = [
    ['a fresh record', () => undefined],
    ['with detail, nested and unsorted', (r) => (r.detail = { z: 1, a: [{ why: 'private', address: '10.0.0.1' }], m: { y: null, b: 'x"y' } })],
    ['with undefined detail and odd strings', (r) => {
      r.detail = undefined;
      r.host = 'é\u2028"\\';
      r.path = '/a?b=c';
    }],
    ['with every field set', (r) => {
      Object.assign(r, { agent: 'coder', address: '1.2.3.4', verdict: 'allow', mode: 'report', rule: 'r', reason: 'rule_allow', status: 200, bytesUp: 10, bytesDown: 2 ** 40 });
      r.timings = { totalMs: 1.5, dnsMs: null, connectMs: 0.25 };
    }],
    ['with an unexpected extra key (general path)', (r) => ((r as unknown as Record<string, unknown>).Zextra = 1)],
    ['with every optional key', (r) => {
      Object.assign(r, { replica: 'r1', parent: 'p', inspected: true, capture: 'transparent', secrets: ['b', 'a'] });
      r.detail = { policy: { rule: 'x', verdict: 'deny' }, error: 'e' };
    }],
    ['with detail only before nothing else', (r) => {
      for (const k of Object.keys(r)) delete (r as unknown as Record<string, unknown>)[k];
      r.detail = { b: 2, a: 1 };
    }],
    ['with detail and only keys after it', (r) => {
      for (const k of ['address', 'agent', 'bytesDown', 'bytesUp', 'client']) delete (r as unknown as Record<string, unknown>)[k];
      r.detail = { x: [1, { d: 1, c: undefined }] };
    }],
    ['with detail and only keys before it', (r) => {
      for (const k of Object.keys(r)) if (k > 'detail') delete (r as unknown as Record<string, unknown>)[k];
      r.detail = {};
    }],
    ['with a Date and a function in detail', (r) => (r.detail = { at: new Date(0), f: () => 1 })],
    ['with a function as a field', (r) => ((r as unknown as Record<string, unknown>).path = () => 1)],
    ['with an object where a string belongs', (r) => ((r as unknown as Record<string, unknown>).address = { z: 1, a: { host: 'h' } })],
    ['with an extra timing', (r) => ((r.timings as unknown as Record<string, unknown>).zMs = 3)],
    ['with a nested object in timings', (r) => ((r.timings as unknown as Record<string, unknown>).dnsMs = { a: 1 })],
    ['with timings as an array', (r) => ((r as unknown as Record<string, unknown>).timings = [1, undefined])],
    ['with NaN, -0 and huge numbers', (r) => Object.assign(r, { bytesUp: NaN, bytesDown: -0, port: 1e21, status: Infinity })],
    ['with non-string secrets', (r) => ((r as unknown as Record<string, unknown>).secrets = ['a', { b: 1 }])],
    ['with a toJSON on the record', (r) => Object.setPrototypeOf(r, { toJSON: () => 'x' })],
    ['with undefined top-level values', (r) => Object.assign(r, { agent: undefined, replica: undefined })],
  ];
  it.each(cases)('matches canonicalJson byte for byte: %s', (_label, edit) => {
    const r = base();
    edit(r);
    expect(canonicalRecordJson(r)).toBe(canonicalJson(r));
  });
});
