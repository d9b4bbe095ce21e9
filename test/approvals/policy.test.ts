import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { PolicyError } from '../../src/policy/types.js';
import { mergeGrants, parseGrantsText } from '../../src/approvals/grants-file.js';

const name = (value: string) => ({ kind: 'name' as const, value });
const compile = (yaml: string) => compilePolicy(parsePolicyText(yaml, 'p.yaml'));

describe('action: ask and on_no_match: ask', () => {
  const p = compile(`version: 1
rules:
  - name: ask-gh
    action: ask
    hosts: ["*.github.com"]
  - name: allow-api
    action: allow
    hosts: [api.github.com]
  - name: deny-gists
    action: deny
    hosts: [gist.github.com]
  - name: ask-get-only
    action: ask
    hosts: [get.example]
    methods: [GET]
agents:
  - name: curious
    on_no_match: ask
  - name: strict
    on_no_match: deny
`);

  it('asks for a host only an ask rule matches, on any port by default', () => {
    for (const port of [443, 80, 8443]) {
      const d = p.decide({ agent: null, host: name('raw.github.com'), port });
      expect(d).toMatchObject({ verdict: 'deny', reason: 'approval_required', rule: 'ask-gh', ask: true });
    }
  });

  it('an allow wins over an ask, a deny wins over both', () => {
    expect(p.decide({ agent: null, host: name('api.github.com'), port: 443 })).toMatchObject({ verdict: 'allow', rule: 'allow-api' });
    expect(p.decide({ agent: null, host: name('api.github.com'), port: 443 }).ask).toBeUndefined();
    const d = p.decide({ agent: null, host: name('gist.github.com'), port: 443 });
    expect(d).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'deny-gists' });
    expect(d.ask).toBeUndefined();
  });

  it('an ask rule with methods asks only for those methods', () => {
    expect(p.decide({ agent: null, host: name('get.example'), port: 80, method: 'GET' }).ask).toBe(true);
    expect(p.decide({ agent: null, host: name('get.example'), port: 80, method: 'POST' })).toMatchObject({ reason: 'no_rule' });
  });

  it('on_no_match: ask per agent; the policy default stays deny', () => {
    expect(p.decide({ agent: null, host: name('unknown.example'), port: 443 })).toMatchObject({ reason: 'no_rule' });
    expect(p.decide({ agent: 'strict', host: name('unknown.example'), port: 443 })).toMatchObject({ reason: 'no_rule' });
    expect(p.decide({ agent: 'curious', host: name('unknown.example'), port: 443 })).toMatchObject({ reason: 'approval_required', rule: null, ask: true });
    // Deny still wins for an agent that asks on no match.
    expect(p.decide({ agent: 'curious', host: name('gist.github.com'), port: 443 })).toMatchObject({ reason: 'rule_deny' });
  });

  it('on_no_match: ask at the top applies to every agent without its own setting, and DNS asks too', () => {
    const q = compile('version: 1\non_no_match: ask\nagents:\n  - name: a\n  - name: b\n    on_no_match: deny\n');
    expect(q.decide({ agent: 'a', host: name('x.example'), port: 443 }).ask).toBe(true);
    expect(q.decide({ agent: null, host: name('x.example'), port: null, qtype: 'A' }).ask).toBe(true);
    expect(q.decide({ agent: 'b', host: name('x.example'), port: 443 })).toMatchObject({ reason: 'no_rule' });
  });

  it('a policy without on_no_match keeps its hash (the key is not added when unset)', () => {
    const a = parsePolicyText('version: 1\nrules:\n  - name: r\n    action: allow\n    hosts: [a.example]\n', 'a.yaml');
    const b = parsePolicyText('version: 1\non_no_match: ask\nrules:\n  - name: r\n    action: allow\n    hosts: [a.example]\n', 'b.yaml');
    expect(a.hash).not.toBe(b.hash);
    expect('onNoMatch' in a).toBe(false);
  });

  it('refuses what an ask rule cannot do, and a bad on_no_match, with file and line', () => {
    const bad = () => parsePolicyText('version: 1\non_no_match: maybe\nrules:\n  - name: r\n    action: ask\n    hosts: [a.example]\n    inspect: true\n', 'bad.yaml');
    expect(bad).toThrow(PolicyError);
    try {
      bad();
    } catch (e) {
      const errs = (e as PolicyError).errors;
      expect(errs.map((x) => [x.file, x.line])).toEqual([
        ['bad.yaml', 2],
        ['bad.yaml', 7],
      ]);
      expect(errs[0].message).toContain('on_no_match');
      expect(errs[1].message).toContain('inspect only applies to allow rules');
    }
  });
});

describe('grants file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ae-grants-unit-'));
  const text = `version: 1
rules:
  - name: grant:g_1
    action: allow
    hosts: [shared.example]
    ports: [443]
    granted: { by: alice, at: "2026-01-01T00:00:00.000Z", approval: ap_1 }
agents:
  - name: bot
    rules:
      - name: grant:g_2
        action: allow
        cidrs: [192.0.2.7/32]
        ports: [8080]
`;

  it('parses grants with who and when, and merges them as allow rules that deny still beats', () => {
    const g = parseGrantsText(text, join(dir, 'grants.yaml'));
    expect(g.grants).toEqual([
      expect.objectContaining({ id: 'g_1', agent: null, host: 'shared.example', port: 443, always: true, by: 'alice', approval: 'ap_1', rule: 'grant:g_1' }),
      expect.objectContaining({ id: 'g_2', agent: 'bot', host: '192.0.2.7', port: 8080, rule: 'grant:g_2' }),
    ]);
    const spec = parsePolicyText(
      'version: 1\nrules:\n  - name: no-shared\n    action: deny\n    hosts: [shared.example]\n    ports: [80]\nagents:\n  - name: bot\n  - name: loner\n    shared_rules: false\n',
      'p.yaml',
    );
    const p = compilePolicy(mergeGrants(spec, g.rules));
    expect(p.decide({ agent: null, host: name('shared.example'), port: 443 })).toMatchObject({ verdict: 'allow', rule: 'grant:g_1' });
    // "everyone" includes an agent that does not take the shared rules.
    expect(p.decide({ agent: 'loner', host: name('shared.example'), port: 443 })).toMatchObject({ verdict: 'allow', rule: 'grant:g_1' });
    expect(p.decide({ agent: 'bot', host: { kind: 'ip', value: '192.0.2.7', family: 4 }, port: 8080 })).toMatchObject({ verdict: 'allow', rule: 'grant:g_2' });
    expect(p.decide({ agent: null, host: { kind: 'ip', value: '192.0.2.7', family: 4 }, port: 8080 })).toMatchObject({ verdict: 'deny' });
    expect(p.decide({ agent: null, host: name('shared.example'), port: 80 })).toMatchObject({ reason: 'rule_deny' });
    expect(p.hash).not.toBe(compilePolicy(spec).hash);
  });

  it('refuses a bad edit with file and line: a deny rule, identities, other top-level keys, YAML errors', () => {
    const f = join(dir, 'bad.yaml');
    const cases: [string, number, string][] = [
      ['version: 1\nrules:\n  - name: x\n    action: deny\n    hosts: [a.example]\n', 3, 'allow rules only'],
      ['version: 1\nagents:\n  - name: bot\n    token_env: TOKEN\n', 4, 'only a name and rules'],
      ['version: 1\nmode: report\n', 2, 'only version, rules'],
      ['version: 1\nrules:\n  - name: x\n    action: allow\n    hosts: [a.example]\n    ports: [99999]\n', 6, 'out of range'],
      ['version: 1\nrules: [\n', 3, 'YAML'],
    ];
    for (const [t, line, msg] of cases) {
      let err: PolicyError | null = null;
      try {
        parseGrantsText(t, f);
      } catch (e) {
        err = e as PolicyError;
      }
      expect(err, t).toBeInstanceOf(PolicyError);
      expect(err!.errors[0], t).toMatchObject({ file: f, line });
      expect(err!.message, t).toContain(msg);
    }
    writeFileSync(f, '');
  });
});
