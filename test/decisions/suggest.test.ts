import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { safeGlobParent, suggestPolicy } from '../../src/decisions/suggest.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';
import { rec } from './helpers.js';

const seen = (host: string, port = 443, over: Parameters<typeof rec>[0] = {}) =>
  rec({ host, port, verdict: 'deny', mode: 'report', reason: 'no_rule', rule: null, address: '93.184.216.34', ...over });

describe('policy suggest', () => {
  it('groups safe siblings, lists ports, skips private destinations, and the loader accepts the result', () => {
    const records = [
      seen('a.cdn.example.com'),
      seen('b.cdn.example.com'),
      seen('c.cdn.example.com', 8443),
      seen('api.openai.com'),
      seen('api.openai.com'),
      seen('one.github.io'),
      seen('two.github.io'),
      seen('three.github.io'),
      seen('x.co.uk'),
      seen('y.co.uk'),
      seen('z.co.uk'),
      seen('solo.example.org', 8080),
      seen('1.1.1.1', 443), seen('198.51.100.7', 443),
      seen('169.254.169.254', 80, { reason: 'private_address' }),
      seen('10.0.0.5', 443, { reason: 'no_rule' }),
      seen('[::1]'.slice(1, -1), 443),
      seen('metadata.google.internal', 80),
      seen('db', 5432),
      seen('rebind.example.net', 443, { address: '127.0.0.1' }),
      seen('bad.example', 443, { reason: 'rule_deny', rule: 'no-bad' }),
      seen('garbage', 443, { reason: 'bad_request' }),
      rec({ host: 'dns.example', port: null, method: 'DNS', reason: 'no_rule', verdict: 'deny' }),
    ];
    const s = suggestPolicy(records);
    const doc = parse(s.yaml);
    const rules = doc.rules as { name: string; hosts?: string[]; cidrs?: string[]; ports: number[] }[];
    const all = rules.flatMap((r) => [...(r.hosts ?? []), ...(r.cidrs ?? [])]);
    expect(all.sort()).toEqual(
      ['*.cdn.example.com', 'api.openai.com', 'one.github.io', 'three.github.io', 'two.github.io', 'x.co.uk', 'y.co.uk', 'z.co.uk', 'solo.example.org', '1.1.1.1/32'].sort(),
    );
    expect(rules.find((r) => r.hosts?.includes('*.cdn.example.com'))!.ports).toEqual([443, 8443]);
    expect(rules.find((r) => r.hosts?.includes('solo.example.org'))!.ports).toEqual([8080]);
    expect(rules.find((r) => r.hosts?.includes('api.openai.com'))!.ports).toEqual([443]);
    for (const bad of ['169.254.169.254', '10.0.0.5', '::1', 'metadata.google.internal', 'db', 'rebind.example.net', 'bad.example', '198.51.100.7']) {
      expect(s.yaml.split('\n').filter((l) => !l.startsWith('#')).join('\n')).not.toContain(bad);
    }
    expect(s.skipped.map((x) => x.host)).toEqual(expect.arrayContaining(['169.254.169.254', '10.0.0.5', 'metadata.google.internal', 'rebind.example.net', 'bad.example']));

    // The real loader accepts it, and the compiled policy allows exactly what was observed.
    const policy = compilePolicy(parsePolicyText(s.yaml, 'suggested.yaml'));
    const allow = (h: string, port: number) => policy.decide({ agent: null, host: normalizeHost(h), port }).verdict;
    expect(allow('b.cdn.example.com', 8443)).toBe('allow');
    expect(allow('new.cdn.example.com', 443)).toBe('allow');
    expect(allow('api.openai.com', 443)).toBe('allow');
    expect(allow('api.openai.com', 80)).toBe('deny');
    expect(allow('four.github.io', 443)).toBe('deny');
    expect(allow('w.co.uk', 443)).toBe('deny');
    expect(allow('1.1.1.1', 443)).toBe('allow');
  });

  it('judges glob parents against the public suffix list', () => {
    expect(safeGlobParent('example.com')).toBe(true);
    expect(safeGlobParent('cdn.example.com')).toBe(true);
    expect(safeGlobParent('com')).toBe(false);
    expect(safeGlobParent('co.uk')).toBe(false);
    expect(safeGlobParent('github.io')).toBe(false);
    expect(safeGlobParent('s3.amazonaws.com')).toBe(false);
    expect(safeGlobParent('example.co.uk')).toBe(true);
  });

  it('produces an empty but valid policy from no records', () => {
    const s = suggestPolicy([]);
    expect(parse(s.yaml).rules).toEqual([]);
    expect(() => parsePolicyText(s.yaml, 'empty.yaml')).not.toThrow();
  });
});
