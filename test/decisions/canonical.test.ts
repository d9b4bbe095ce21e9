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
  ];
  it.each(cases)('matches canonicalJson byte for byte: %s', (_label, edit) => {
    const r = base();
    edit(r);
    expect(canonicalRecordJson(r)).toBe(canonicalJson(r));
  });
});
