import { describe, expect, it } from 'vitest';
import { applyFlags, compilePolicy, parsePolicyText, PolicyError } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';

const flags = (allow: string[] = [], deny: string[] = [], allowAddress: string[] = []) => ({ allow, deny, allowAddress });

describe('flags', () => {
  it('build a default-deny policy from flags alone', () => {
    const spec = applyFlags(null, flags(['api.openai.com', '*.github.com:443,80', '10.0.0.0/8:8000-8100', '[2001:db8::]/32:443', '192.0.2.1'], ['gist.github.com'], ['10.20.0.0/16']));
    expect(spec.file).toBe('<flags>');
    expect(spec.mode).toBe('enforce');
    expect(spec.guardExempt).toEqual(['10.20.0.0/16']);
    expect(spec.hash).toMatch(/^[0-9a-f]{16}$/);
    expect(spec.rules.map((r) => [r.name, r.action, r.hosts, r.cidrs, r.ports])).toEqual([
      ['flag:allow:api.openai.com', 'allow', ['api.openai.com'], [], null],
      ['flag:allow:*.github.com:443,80', 'allow', ['*.github.com'], [], [[443, 443], [80, 80]]],
      ['flag:allow:10.0.0.0/8:8000-8100', 'allow', [], ['10.0.0.0/8'], [[8000, 8100]]],
      ['flag:allow:[2001:db8::]/32:443', 'allow', [], ['2001:db8::/32'], [[443, 443]]],
      ['flag:allow:192.0.2.1', 'allow', [], ['192.0.2.1/32'], null],
      ['flag:deny:gist.github.com', 'deny', ['gist.github.com'], [], null],
    ]);
    const p = compilePolicy(spec, {});
    const d = (h: string, port: number) => p.decide({ agent: null, host: normalizeHost(h), port });
    expect(d('api.openai.com', 443).verdict).toBe('allow');
    expect(d('api.openai.com', 80).verdict).toBe('deny');
    expect(d('x.github.com', 80).verdict).toBe('allow');
    expect(d('gist.github.com', 443)).toMatchObject({ verdict: 'deny', rule: 'flag:deny:gist.github.com' });
    expect(d('10.9.9.9', 8050).verdict).toBe('allow');
    expect(d('10.9.9.9', 443).verdict).toBe('deny');
    expect(d('[2001:db8::7]', 443).verdict).toBe('allow');
    expect(d('pastebin.com', 443)).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
  });

  it('add to a loaded policy without changing it', () => {
    const base = parsePolicyText('version: 1\nmode: report\nrules:\n  - {name: a, action: allow, hosts: [a.test]}\n', 'p.yaml');
    const before = JSON.stringify(base);
    const spec = applyFlags(base, flags(['b.test'], [], ['10.0.0.0/8']));
    expect(JSON.stringify(base)).toBe(before);
    expect(spec.file).toBe('p.yaml');
    expect(spec.mode).toBe('report');
    expect(spec.rules.map((r) => r.name)).toEqual(['a', 'flag:allow:b.test']);
    expect(spec.hash).not.toBe(base.hash);
    expect(applyFlags(base, flags()).hash).toBe(base.hash);
  });

  it('a bare IPv6 CIDR without brackets is taken whole', () => {
    expect(applyFlags(null, flags(['2001:db8::/32'])).rules[0].cidrs).toEqual(['2001:db8::/32']);
  });

  it.each([
    ['', /empty/],
    ['api.openai.com:', /empty port list/],
    ['api.openai.com:70000', /out of range/],
    ['api.openai.com:0', /out of range/],
    ['api.openai.com:443e1', /not a decimal/],
    ['api.openai.com:9000-8000', /backwards/],
    ['api.openai.com:http', /not a decimal/],
    ['10.0.0.1/8', /host bits/],
    ['10.0.0.0/33', /prefix/],
    ['[2001:db8::/32:443', /unterminated/],
    ['[2001:db8::]x', /unexpected/],
    ['a**.com', /bad glob/],
    ['bad host.com', /bad host pattern/],
    ['user@host.com', /bad host pattern/],
    ['127.0.0.*', /bad glob/],
  ])('refuses %j', (value, msg) => {
    let err: unknown;
    try {
      applyFlags(null, flags([value]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    const e = (err as PolicyError).errors;
    expect(e).toHaveLength(1);
    expect(e[0]).toMatchObject({ file: '<flags>', line: 0 });
    expect(e[0].message).toMatch(msg);
  });

  it('reports every bad value at once, including --allow-address', () => {
    try {
      applyFlags(null, flags(['a:1:2:x'], ['x:99999'], ['nope']));
      expect.unreachable();
    } catch (e) {
      expect((e as PolicyError).errors.map((x) => x.message.split(':')[0])).toEqual(['--allow "a', '--deny "x', '--allow-address "nope"']);
    }
  });
});
