import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { normalizeHost } from '../../src/net/host.js';
import { embeddedIpv4, parseIp, toWords, v4Text } from '../../src/net/ip.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';

interface Cases {
  decoder: Record<string, { form: string; v4: string | null; candidates: string[] } | null>;
  policy: string;
  literals: Record<string, string>;
  resolved: Record<string, Record<string, 'keep' | 'refuse'>>;
}
const cases = parse(readFileSync(new URL('../fixtures/embedded-ipv4-cases.yaml', import.meta.url), 'utf8')) as Cases;
const policy = compilePolicy(parsePolicyText(`version: 1\n${cases.policy}`, 'embedded.yaml'));

describe('embeddedIpv4 (fixture table)', () => {
  const entries = Object.entries(cases.decoder);
  it('covers every form', () => {
    expect(entries.length).toBeGreaterThanOrEqual(18);
    const forms = new Set(entries.map(([, v]) => v?.form));
    expect([...forms].sort()).toEqual(['6to4', 'compatible', 'mapped', 'nat64', 'nat64-local', 'siit', 'teredo', undefined]);
  });
  it.each(entries)('%s', (address, want) => {
    const e = embeddedIpv4(toWords(parseIp(address)!.bytes));
    if (want === null) return expect(e).toBeNull();
    expect(e && { form: e.form, v4: e.v4 === null ? null : v4Text(e.v4), candidates: e.candidates.map(v4Text) }).toEqual(want);
  });
});

describe('IPv4 CIDR rules judge IP literals that embed IPv4', () => {
  const entries = Object.entries(cases.literals);
  it('has rows for every form, allow and deny', () => {
    expect(entries.length).toBeGreaterThanOrEqual(20);
    expect(entries.filter(([, v]) => v.startsWith('allow')).length).toBeGreaterThanOrEqual(5);
  });
  it.each(entries)('%s -> %s', (host, want) => {
    const [verdict, rule] = want.split(' ');
    const d = policy.decide({ agent: null, host: normalizeHost(host), port: 443 });
    expect(d.verdict).toBe(verdict);
    if (rule === 'no_rule') expect(d).toMatchObject({ reason: 'no_rule', rule: null });
    else expect(d.rule).toBe(rule);
  });
});

describe('IPv4 CIDR constraints judge resolved addresses that embed IPv4', () => {
  const rows = Object.entries(cases.resolved).flatMap(([name, addrs]) => Object.entries(addrs).map(([a, w]) => [name, a, w] as const));
  it('has rows for both names, kept and refused', () => {
    expect(rows.length).toBeGreaterThanOrEqual(25);
    expect(rows.filter((r) => r[2] === 'keep').length).toBeGreaterThanOrEqual(8);
  });
  it.each(rows)('%s resolving to %s -> %s', (name, address, want) => {
    const d = policy.decide({ agent: null, host: normalizeHost(name), port: 443 });
    expect(d.verdict).toBe('allow');
    expect(d.constraint).not.toBeNull();
    const v = policy.vetAddresses(d.constraint, [address]);
    expect(v).toEqual(want === 'keep' ? { allowed: [address], refused: [] } : { allowed: [], refused: [address] });
  });
});
