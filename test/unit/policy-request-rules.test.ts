import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';
import { compilePolicy, parsePolicyText, PolicyError } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';
import { normalizePath, PathError } from '../../src/net/path.js';
import { broker } from '../../src/policy/secrets.js';
import type { HttpFacts } from '../../src/policy/request-rules.js';

interface NormCase { input: string; expected: string }
interface MatchCase { pattern: string; input: string; expected: 'match' | 'no-match' | 'invalid' }
const corpus = parse(readFileSync(new URL('../fixtures/path-matching.yaml', import.meta.url), 'utf8')) as { normalize: NormCase[]; match: MatchCase[] };

function norm(input: string): string {
  try {
    return normalizePath(input);
  } catch (e) {
    if (e instanceof PathError) return 'invalid';
    throw e;
  }
}

const host = normalizeHost('api.example.com');
const facts = (path: string, query = '', headers: HttpFacts['headers'] = {}): HttpFacts => ({ path, query, headers });

function matchCase(c: MatchCase): MatchCase['expected'] {
  const text = `version: 1\nrules:\n  - name: only\n    action: allow\n    hosts: [api.example.com]\n    ports: [80]\n    paths: [${JSON.stringify(c.pattern)}]\n`;
  let policy;
  try {
    policy = compilePolicy(parsePolicyText(text, 'corpus.yaml'));
  } catch (e) {
    if (e instanceof PolicyError) return 'invalid';
    throw e;
  }
  const p = norm(c.input);
  if (p === 'invalid') return 'invalid';
  const d = policy.decide({ agent: null, host, port: 80, method: 'GET', http: facts(p) });
  return d.verdict === 'allow' ? 'match' : 'no-match';
}

describe('path normalisation corpus', () => {
  it('covers every refused class and both outcomes', () => {
    expect(corpus.normalize.length).toBeGreaterThanOrEqual(50);
    expect(corpus.match.length).toBeGreaterThanOrEqual(30);
    expect(corpus.normalize.filter((c) => c.expected === 'invalid').length).toBeGreaterThanOrEqual(20);
    for (const k of ['match', 'no-match', 'invalid']) expect(corpus.match.some((c) => c.expected === k)).toBe(true);
  });
  for (const c of corpus.normalize) {
    it(`normalize ${JSON.stringify(c.input)} → ${c.expected}`, () => expect(norm(c.input)).toBe(String(c.expected)));
  }
  for (const c of corpus.match) {
    it(`${c.pattern} vs ${JSON.stringify(c.input)} → ${c.expected}`, () => expect(matchCase(c)).toBe(c.expected));
  }
});

const RULES = `version: 1
secrets:
  - name: github
    env: GH_TOKEN
  - name: llm
    env: LLM_KEY
    placeholder: sk-placeholder-llm-0000
rules:
  - name: gh-read
    action: allow
    hosts: [api.github.com]
    ports: [443, 80]
    inspect: true
    methods: [GET, POST]
    paths: [/repos/acme/**]
    secrets: [github]
  - name: gh-no-admin
    action: deny
    hosts: [api.github.com]
    ports: [443, 80]
    paths: [/repos/acme/*/hooks/**]
  - name: search
    action: allow
    hosts: [search.example.com]
    ports: [80]
    query:
      q: "*"
      lang: [en, fr]
    match_headers:
      accept: application/json*
  - name: llm
    action: allow
    hosts: [llm.example.com]
    ports: [443, 80]
    secrets: [llm]
    headers:
      x-api-key: "\${secret:llm}"
  - name: plain
    action: allow
    hosts: [other.example.com]
    ports: [443, 80]
`;
const ENV = { GH_TOKEN: 'ghp_REALTOKENVALUE123', LLM_KEY: 'sk-real-llm-value-456' };
const gh = normalizeHost('api.github.com');

describe('request rules in decide()', () => {
  const p = compilePolicy(parsePolicyText(RULES, 'r.yaml'), ENV);
  const get = (h: typeof gh, port: number, method: string, f: HttpFacts) => p.decide({ agent: null, host: h, port, method, http: f });

  it('methods and paths both have to match; the refusal names the reason', () => {
    expect(get(gh, 80, 'GET', facts('/repos/acme/x')).verdict).toBe('allow');
    expect(get(gh, 80, 'POST', facts('/repos/acme/x/issues')).verdict).toBe('allow');
    expect(get(gh, 80, 'DELETE', facts('/repos/acme/x'))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'gh-read' });
    expect(get(gh, 80, 'GET', facts('/repos/other/x'))).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed', rule: 'gh-read' });
    expect(get(gh, 80, 'GET', facts('/user'))).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed' });
  });

  it('a deny rule with paths denies only those paths (deny wins)', () => {
    expect(get(gh, 80, 'GET', facts('/repos/acme/x/hooks/1'))).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'gh-no-admin' });
    expect(get(gh, 80, 'GET', facts('/repos/acme/x/hooksy')).verdict).toBe('allow');
  });

  it('a method without the request facts cannot pass a rule with paths (fail closed)', () => {
    expect(p.decide({ agent: null, host: gh, port: 80, method: 'GET' })).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed' });
  });

  it('query and header matchers', () => {
    const s = normalizeHost('search.example.com');
    const j = { accept: 'application/json; charset=utf-8' };
    expect(get(s, 80, 'GET', facts('/s', '?q=x&lang=en', j)).verdict).toBe('allow');
    expect(get(s, 80, 'GET', facts('/s', '?q=x&lang=de', j)).reason).toBe('path_not_allowed');
    expect(get(s, 80, 'GET', facts('/s', '?q=x&lang=en&lang=de', j)).reason).toBe('path_not_allowed');
    expect(get(s, 80, 'GET', facts('/s', '?lang=en', j)).reason).toBe('path_not_allowed');
    expect(get(s, 80, 'GET', facts('/s', '?q=x&lang=fr', { accept: 'text/html' })).reason).toBe('path_not_allowed');
    expect(get(s, 80, 'GET', facts('/s', '?q=x&lang=fr', {})).reason).toBe('path_not_allowed');
  });

  it('a tunnel: inspected when the deciding rule asks for it, otherwise opaque and refused by request rules', () => {
    const inspected = p.decide({ agent: null, host: gh, port: 443, tunnel: 'inspected' });
    expect(inspected).toMatchObject({ verdict: 'allow', rule: 'gh-read' });
    expect(inspected.effects?.inspect).toBe(true);
    // Opaque: paths and methods cannot be enforced inside, so the rule cannot allow it; the path deny refuses it too.
    const opaque = p.decide({ agent: null, host: gh, port: 443, tunnel: 'opaque' });
    expect(opaque.verdict).toBe('deny');
    expect(['method_not_allowed', 'path_not_allowed']).toContain(opaque.reason);
    const search = p.decide({ agent: null, host: normalizeHost('search.example.com'), port: 80, tunnel: 'opaque' });
    expect(search).toMatchObject({ verdict: 'deny', reason: 'path_not_allowed', rule: 'search' });
    // DNS (no method, not a tunnel) is not refused by request rules.
    expect(p.decide({ agent: null, host: gh, port: null, qtype: 'A' }).verdict).toBe('allow');
  });

  it('an allow carries the deciding rule effects', () => {
    const d = get(normalizeHost('llm.example.com'), 80, 'POST', facts('/v1/messages'));
    expect(d.effects).toMatchObject({ inspect: false, secrets: ['llm'], setHeaders: [{ name: 'x-api-key', value: '${secret:llm}' }] });
  });
});

describe('secrets and brokering', () => {
  const p = compilePolicy(parsePolicyText(RULES, 'r.yaml'), ENV);

  it('values never show in JSON, inspect or the spec', () => {
    const all = JSON.stringify(p.spec) + JSON.stringify(p.secrets) + inspect(p.secrets, { showHidden: true, depth: 5 }) + inspect(p, { depth: 6 });
    expect(all).not.toContain(ENV.GH_TOKEN);
    expect(all).not.toContain(ENV.LLM_KEY);
    expect(JSON.stringify(p.spec)).toContain('agent-egress-placeholder-github');
  });

  it('replaces the placeholders of the rule secrets, refuses others, sets headers', () => {
    const ph = 'agent-egress-placeholder-github';
    const ok = broker(p.secrets, { inspect: true, secrets: ['github'], setHeaders: [] }, ['host', 'h', 'Authorization', `Bearer ${ph}`], '/x');
    expect(ok).toEqual({ ok: true, headers: ['host', 'h', 'Authorization', `Bearer ${ENV.GH_TOKEN}`], used: ['github'] });
    const no = broker(p.secrets, { inspect: false, secrets: [], setHeaders: [] }, ['Authorization', `Bearer ${ph}`], '/x');
    expect(no).toEqual({ ok: false, secret: 'github' });
    // In the path or the query too: that is how an exfiltration through a URL looks.
    expect(broker(p.secrets, null, ['a', 'b'], `/x?t=${ph}`)).toEqual({ ok: false, secret: 'github' });
    const set = broker(p.secrets, { inspect: false, secrets: ['llm'], setHeaders: [{ name: 'x-api-key', value: '${secret:llm}' }] }, ['X-Api-Key', 'agent-sent', 'a', 'b'], '/');
    expect(set).toEqual({ ok: true, headers: ['a', 'b', 'x-api-key', ENV.LLM_KEY], used: ['llm'] });
    expect(broker(p.secrets, null, ['a', 'b'], '/')).toEqual({ ok: true, headers: ['a', 'b'], used: [] });
  });

  it('reads values from files (relative to the policy) and refuses a load with a missing value, with file:line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ae-secrets-'));
    writeFileSync(join(dir, 'tok'), 'file-secret-value\n');
    const text = `version: 1\nsecrets:\n  - name: s\n    file: tok\nrules:\n  - name: r\n    action: allow\n    hosts: [a.example]\n    secrets: [s]\n    headers: { authorization: "Bearer \${secret:s}" }\n`;
    const q = compilePolicy(parsePolicyText(text, join(dir, 'p.yaml')), {});
    expect(broker(q.secrets, q.decide({ agent: null, host: normalizeHost('a.example'), port: 443, tunnel: 'inspected' }).effects, [], '/').headers).toEqual([
      'authorization',
      'Bearer file-secret-value',
    ]);
    // A missing value is a warning with file:line, and the secret is unusable: its placeholder is refused.
    const noFile = compilePolicy(parsePolicyText(text.replace('file: tok', 'file: nope'), join(dir, 'p.yaml')), {});
    expect(noFile.warnings.join('\n')).toMatch(/p\.yaml:3: secret s: cannot read/);
    expect(broker(noFile.secrets, noFile.decide({ agent: null, host: normalizeHost('a.example'), port: 443, tunnel: 'inspected' }).effects, [], '/')).toEqual({ ok: false, secret: 's' });
    const noEnv = compilePolicy(parsePolicyText(RULES, 'r.yaml'), { GH_TOKEN: 'x' });
    expect(noEnv.warnings.join('\n')).toMatch(/r\.yaml:5: secret llm: environment variable LLM_KEY is not set/);
    expect(broker(noEnv.secrets, { inspect: false, secrets: ['llm'], setHeaders: [] }, ['x-api-key', 'sk-placeholder-llm-0000'], '/')).toEqual({ ok: false, secret: 'llm' });
    // check and validate can run without the values.
    expect(compilePolicy(parsePolicyText(RULES, 'r.yaml'), {}, { secretValues: false }).hash).toBe(p.hash);
  });

  const bad: [string, string, RegExp][] = [
    ['inspect on a deny rule', 'rules:\n  - { name: d, action: deny, hosts: [a.example], inspect: true }\n', /inspect only applies to allow rules/],
    ['an unknown secret', 'rules:\n  - { name: a, action: allow, hosts: [a.example], secrets: [nope] }\n', /unknown secret "nope"/],
    ['a header naming an unlisted secret', 'secrets: [{ name: s, env: X }]\nrules:\n  - { name: a, action: allow, hosts: [a.example], headers: { x-k: "${secret:s}" } }\n', /does not list under secrets/],
    ['setting Host', 'rules:\n  - { name: a, action: allow, hosts: [a.example], headers: { Host: evil } }\n', /cannot be set by a rule/],
    ['a secret with env and file', 'secrets: [{ name: s, env: X, file: y }]\n', /exactly one of env or file/],
    ['overlapping placeholders', 'secrets: [{ name: s, env: X, placeholder: abcdefghijklmn }, { name: t, env: Y, placeholder: abcdefghijklmnop }]\n', /overlaps/],
    ['a short placeholder', 'secrets: [{ name: s, env: X, placeholder: short }]\n', /invalid format/],
    ['a relative path glob', 'rules:\n  - { name: a, action: allow, hosts: [a.example], paths: [x/y] }\n', /must start with "\/"/],
  ];
  for (const [what, body, re] of bad) {
    it(`refuses ${what} with file and line`, () => {
      let err: unknown;
      try {
        parsePolicyText(`version: 1\n${body}`, 'bad.yaml');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PolicyError);
      expect((err as Error).message).toMatch(/^bad\.yaml:[2-9]:\d+: /m);
      expect((err as Error).message).toMatch(re);
    });
  }
});

describe('normalizePath: the unchanged-path shortcut agrees with the full normalisation', () => {
  // "%61" is an escaped "a", which the full path decodes back: normalising p and p with one "a" escaped
  // must agree, and the escaped form never takes the shortcut. Deterministic inputs (LCG), no "%" of their own.
  it('on 5000 generated paths of slashes, dots and path characters', () => {
    const alphabet = ['/', '/', '.', '.', 'a', 'b', '-', '~', ':', '@', ';', ' ', '\\', '"', '*'];
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    let compared = 0;
    let unchanged = 0;
    for (let i = 0; i < 5000; i++) {
      let p = '/a';
      const len = next() % 12;
      for (let k = 0; k < len; k++) p += alphabet[next() % alphabet.length];
      const escaped = p.replace('a', '%61');
      expect(norm(p), p).toBe(norm(escaped));
      compared++;
      if (norm(p) === p) unchanged++;
    }
    expect(compared).toBe(5000);
    // Both branches are exercised: paths left as they are, and paths the normalisation changes or refuses.
    expect(unchanged).toBeGreaterThan(100);
    expect(unchanged).toBeLessThan(4900);
  });
});
