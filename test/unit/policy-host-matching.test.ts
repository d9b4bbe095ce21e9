import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compilePolicy, parsePolicyText, PolicyError } from '../../src/policy/index.js';
import { HostError, normalizeHost } from '../../src/net/host.js';

interface Case {
  input: string;
  pattern: string;
  expected: 'match' | 'no-match' | 'invalid';
}

const corpus = parse(readFileSync(new URL('../fixtures/host-matching.yaml', import.meta.url), 'utf8')) as { cases: Case[] };

/** The real path: the pattern goes through a policy file, the input through request normalisation. */
function run(c: Case): Case['expected'] {
  const text = `version: 1\nrules:\n  - name: only\n    action: allow\n    hosts: [${JSON.stringify(String(c.pattern))}]\n`;
  let policy;
  try {
    policy = compilePolicy(parsePolicyText(text, 'corpus.yaml'));
  } catch (e) {
    if (e instanceof PolicyError) return 'invalid';
    throw e;
  }
  let host;
  try {
    host = normalizeHost(String(c.input));
  } catch (e) {
    if (e instanceof HostError) return 'invalid';
    throw e;
  }
  const d = policy.decide({ agent: null, host, port: 443 });
  return d.verdict === 'allow' ? 'match' : 'no-match';
}

describe('host matching corpus', () => {
  it('has a substantial corpus with every outcome', () => {
    expect(corpus.cases.length).toBeGreaterThanOrEqual(80);
    for (const k of ['match', 'no-match', 'invalid']) expect(corpus.cases.some((c) => c.expected === k)).toBe(true);
  });

  it.each(corpus.cases.map((c) => [`${c.pattern} vs ${c.input}`, c] as const))('%s', (_label, c) => {
    expect(run(c)).toBe(c.expected);
  });

  it('matches the same way when every corpus pattern sits in one big policy (index, not per-rule scan)', () => {
    const valid = corpus.cases.filter((c) => {
      try {
        parsePolicyText(`version: 1\nrules:\n  - {name: x, action: allow, hosts: [${JSON.stringify(String(c.pattern))}]}\n`, 'x');
        return true;
      } catch {
        return false;
      }
    });
    const rules = valid.map((c, i) => `  - {name: r${i}, action: allow, hosts: [${JSON.stringify(String(c.pattern))}]}`).join('\n');
    const policy = compilePolicy(parsePolicyText(`version: 1\nrules:\n${rules}\n`, 'all.yaml'));
    for (const [i, c] of valid.entries()) {
      if (c.expected !== 'match') continue;
      const d = policy.decide({ agent: null, host: normalizeHost(String(c.input)), port: 443 });
      expect(d.verdict, `${c.pattern} vs ${c.input}`).toBe('allow');
      // The named rule may be an earlier pattern that also matches, but it must be one that does.
      const named = valid[Number(d.rule!.slice(1))];
      expect(run({ ...named, input: c.input }), `rule ${d.rule} for ${c.input}`).toBe('match');
      expect(Number(d.rule!.slice(1))).toBeLessThanOrEqual(i);
    }
  });
});
