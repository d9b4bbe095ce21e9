import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compilePolicy, loadPolicyFile, parsePolicyText, PolicyError } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/policies/${name}`, import.meta.url));
const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

function errorsOf(file: string): { line: number; column: number; message: string }[] {
  try {
    loadPolicyFile(fixture(file));
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    // A PolicyError always names at least one cause; the file check below must not run zero times.
    expect((e as PolicyError).errors.length).toBeGreaterThan(0);
    for (const x of (e as PolicyError).errors) expect(x.file).toBe(fixture(file));
    return (e as PolicyError).errors.map(({ line, column, message }) => ({ line, column, message }));
  }
  throw new Error(`${file} loaded without errors`);
}

type Expect = [line: number, column: number, message: RegExp];

describe('load errors: every problem, with its line and column', () => {
  it.each<[string, Expect[]]>([
    ['bad-yaml.yaml', [[6, 3, /^YAML: .*\]/]]],
    ['duplicate-keys.yaml', [[3, 1, /^YAML: Map keys must be unique/]]],
    ['empty.yaml', [[1, 1, /empty/]]],
    ['list.yaml', [[1, 1, /must be a mapping/]]],
    ['bad-version.yaml', [
      [1, 10, /^version: must be 1$/],
      [2, 7, /^mode: must be one of: enforce, report$/],
      [3, 15, /^require_auth: must be boolean$/],
    ]],
    ['unknown-key.yaml', [
      [6, 5, /^rules\[0\]\.port: unknown key "port"$/],
      [10, 5, /^agents\[0\]\.colour: unknown key "colour"$/],
    ]],
    ['bad-glob.yaml', [
      [7, 9, /^rules\[0\]\.hosts\[1\]: bad glob "a\*\*b\.example\.com"/],
      [8, 9, /^rules\[0\]\.hosts\[2\]: bad host pattern "x\?\.example\.com"/],
      [9, 9, /^rules\[0\]\.hosts\[3\]: bad glob "10\.0\.0\.\*": it can only match IP addresses/],
    ]],
    ['bad-cidr.yaml', [
      [3, 12, /^address_guard\.exempt\[0\]: "10\.20\.0\.1\/16" has host bits set; did you mean 10\.20\.0\.0\/16\?$/],
      [9, 9, /^rules\[0\]\.cidrs\[1\]: "10\.0\.0\.1\/8" has host bits set/],
      [10, 9, /^rules\[0\]\.cidrs\[2\]: not an IP address or CIDR/],
      [11, 9, /^rules\[0\]\.cidrs\[3\]: bad prefix length/],
    ]],
    ['bad-port.yaml', [
      [8, 9, /^rules\[0\]\.ports\[1\]: port 70000 is out of range 1-65535$/],
      [9, 9, /^rules\[0\]\.ports\[2\]: port "443e1" is not a decimal number$/],
      [10, 9, /^rules\[0\]\.ports\[3\]: port "443e1" is not a decimal number$/],
      [11, 9, /^rules\[0\]\.ports\[4\]: port "0x1bb" is not a decimal number$/],
      [12, 9, /^rules\[0\]\.ports\[5\]: port range "9000-8000" runs backwards$/],
      [13, 9, /^rules\[0\]\.ports\[6\]: port 0 is out of range/],
    ]],
    ['duplicate-names.yaml', [
      [6, 11, /^rules\[1\]\.name: duplicate rule name "same" \(first at line 3\)$/],
      [14, 11, /^agents\[1\]\.name: duplicate agent name "bot" \(first at line 10\)$/],
    ]],
    ['bad-agent.yaml', [
      [4, 19, /^agents\[0\]\.token_sha256: has an invalid format/],
      [7, 16, /^agents\[1\]\.token_env: give token_sha256 or token_env, not both$/],
      [8, 11, /^agents\[2\]\.name: has an invalid format/],
      [13, 18, /^agents\[4\]\.cert_names\[0\]: certificate name "shared-cn" already identifies agent "certs-a"$/],
    ]],
    ['bad-rule.yaml', [
      [5, 13, /^rules\[0\]\.hosts\[0\]: "192\.0\.2\.1" is an IP address; write it under cidrs \(e\.g\. 192\.0\.2\.1\/32\)$/],
      [6, 5, /^rules\[1\]: a rule needs hosts or cidrs/],
      [9, 13, /^rules\[2\]\.action: must be one of: allow, deny, ask$/],
      [14, 20, /^rules\[3\]\.methods\[1\]: CONNECT cannot be listed/],
      [18, 16, /^rules\[4\]\.dns_types: dns_types only applies to allow rules$/],
    ]],
  ])('%s', (file, expected) => {
    const errors = errorsOf(file);
    expect(expected.length).toBeGreaterThan(0);
    expect(errors).toHaveLength(expected.length);
    expect(errors.map((e) => [e.line, e.column])).toEqual(expected.map(([l, c]) => [l, c]));
    errors.forEach((e, i) => expect(e.message).toMatch(expected[i][2]));
  });

  it('the PolicyError message lists file:line:column for each error', () => {
    try {
      loadPolicyFile(fixture('unknown-key.yaml'));
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message.split('\n')).toEqual([
        `${fixture('unknown-key.yaml')}:6:5: rules[0].port: unknown key "port"`,
        `${fixture('unknown-key.yaml')}:10:5: agents[0].colour: unknown key "colour"`,
      ]);
    }
  });

  it('a missing file is a PolicyError too', () => {
    expect(() => loadPolicyFile(fixture('does-not-exist.yaml'))).toThrow(PolicyError);
  });

  it.each([
    'version: 1\nrules: nope\n',
    'version: 1\nrules: [[1, 2]]\n',
    'version: 1\nrules:\n  - {name: 5, action: 7, hosts: x, cidrs: 3, ports: {a: 1}, methods: [1], dns_types: [[]]}\n',
    'version: 1\nrules:\n  - {name: a, action: allow, hosts: [null, 3, {x: 1}], ports: [null, true, [443]]}\n',
    'version: 1\nagents: 5\n',
    'version: 1\nagents:\n  - {name: [x], sources: 10.0.0.0/8, cert_names: [1], rules: {}, shared_rules: "no"}\n',
    'version: 1\naddress_guard: [10.0.0.0/8]\n',
    'version: 1\naddress_guard: {exempt: 10.0.0.0/8}\n',
    'version: "1"\n',
    '42\n',
    '"just a string"\n',
    'version: 1\n---\nversion: 1\n',
    'a: &x [*x]\n',
    'version: 1\nrules:\n  - &r {name: a, action: allow, hosts: [a.test]}\n  - *r\n',
  ])('malformed input %j is a PolicyError, never a crash', (text) => {
    let err: unknown;
    try {
      parsePolicyText(text, 'm.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).errors.length).toBeGreaterThan(0);
    for (const e of (err as PolicyError).errors) {
      expect(e.line).toBeGreaterThanOrEqual(1);
      expect(e.column).toBeGreaterThanOrEqual(1);
    }
  });

  it('missing version is an error', () => {
    expect(() => parsePolicyText('mode: enforce\n', 'v.yaml')).toThrow(/missing required key "version"/);
  });
});

describe('good policies', () => {
  it('good.yaml: every key read and normalised', () => {
    const spec = loadPolicyFile(fixture('good.yaml'));
    expect(spec).toMatchObject({ mode: 'enforce', requireAuth: false, guardExempt: ['10.20.0.0/16', 'fd00:20::/32'] });
    expect(spec.rules[0]).toMatchObject({
      name: 'llm-apis',
      action: 'allow',
      hosts: ['api.openai.com', '*.anthropic.com', 'api-*.example.com'],
      cidrs: ['203.0.113.0/24'],
      ports: [[443, 443], [8000, 8100]],
      methods: ['GET', 'POST'],
      dnsTypes: ['TXT'],
      pos: { file: fixture('good.yaml'), line: 8 },
    });
    expect(spec.rules[1]).toMatchObject({ name: 'no-paste', ports: null, methods: null, dnsTypes: null, cidrs: [] });
    expect(spec.agents[0]).toMatchObject({
      name: 'ci-bot',
      tokenSha256: 'abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789',
      tokenEnv: null,
      sources: ['10.1.0.0/16'],
      certNames: ['ci-bot'],
      mode: 'report',
      sharedRules: true,
      pos: { line: 19 },
    });
    expect(spec.agents[1]).toMatchObject({ name: 'env-bot', tokenEnv: 'ENV_BOT_TOKEN', sharedRules: false, mode: null, rules: [] });
  });

  it('the hash ignores file, positions and comments, and follows content', () => {
    const text = readFileSync(fixture('good.yaml'), 'utf8');
    const a = parsePolicyText(text, 'a.yaml');
    const b = parsePolicyText(`# a comment\n\n${text}`, 'elsewhere/b.yaml');
    expect(a.hash).toMatch(/^[0-9a-f]{16}$/);
    expect(b.hash).toBe(a.hash);
    expect(parsePolicyText(text.replace('pastebin.com', 'paste.ee'), 'a.yaml').hash).not.toBe(a.hash);
    expect(compilePolicy(a, {}).hash).toBe(a.hash);
  });

  const shipped = ['policies/default.yaml', ...readdirSync(repo('policies/examples')).filter((f) => f.endsWith('.yaml')).map((f) => `policies/examples/${f}`)];
  it('ships at least the default and three examples', () => {
    expect(shipped.length).toBeGreaterThanOrEqual(4);
  });
  it.each(shipped)('%s validates and compiles', (p) => {
    const spec = loadPolicyFile(repo(p));
    expect(compilePolicy(spec, {}).hash).toBe(spec.hash);
  });

  it('default.yaml: LLM APIs, registries and GitHub on 443; paste sites and everything else denied', () => {
    const p = compilePolicy(loadPolicyFile(repo('policies/default.yaml')), {});
    const d = (h: string, port = 443) => p.decide({ agent: null, host: normalizeHost(h), port });
    for (const h of ['api.openai.com', 'api.anthropic.com', 'registry.npmjs.org', 'pypi.org', 'files.pythonhosted.org', 'proxy.golang.org', 'github.com', 'raw.githubusercontent.com']) {
      expect(d(h).verdict, h).toBe('allow');
    }
    expect(d('api.openai.com', 80).verdict).toBe('deny');
    expect(d('gist.github.com')).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'no-paste-sites' });
    expect(d('pastebin.com')).toMatchObject({ verdict: 'deny', reason: 'rule_deny' });
    expect(d('example.com')).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    expect(d('140.82.112.3')).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    expect(p.spec.mode).toBe('enforce');
  });
});
