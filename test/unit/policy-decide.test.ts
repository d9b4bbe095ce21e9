import { describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicyText, type DecisionRequest } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';

const compile = (yaml: string, env: NodeJS.ProcessEnv = {}) => compilePolicy(parsePolicyText(`version: 1\n${yaml}`, 't.yaml'), env);
const req = (host: string, port: number | null = 443, extra: Partial<DecisionRequest> = {}): DecisionRequest => ({
  agent: null,
  host: normalizeHost(host),
  port,
  ...extra,
});

describe('deny wins, order never matters', () => {
  const allow = `  - {name: gh, action: allow, hosts: ["*.github.com"]}`;
  const deny = `  - {name: no-gist, action: deny, hosts: [gist.github.com]}`;
  for (const [label, rules] of [
    ['allow first', `${allow}\n${deny}`],
    ['deny first', `${deny}\n${allow}`],
  ]) {
    it(label, () => {
      const p = compile(`rules:\n${rules}\n`);
      expect(p.decide(req('gist.github.com'))).toMatchObject({ verdict: 'deny', reason: 'rule_deny', rule: 'no-gist' });
      expect(p.decide(req('api.github.com'))).toMatchObject({ verdict: 'allow', reason: 'rule_allow', rule: 'gh' });
      expect(p.decide(req('github.com'))).toMatchObject({ verdict: 'deny', reason: 'no_rule', rule: null });
    });
  }

  it('a deny in the shared rules beats an allow in the agent rules and vice versa', () => {
    const p = compile(`rules:
  - {name: shared-deny, action: deny, hosts: [evil.example.com]}
  - {name: shared-allow, action: allow, hosts: [ok.example.com]}
agents:
  - name: a
    token_sha256: "${'a'.repeat(64)}"
    rules:
      - {name: own-allow, action: allow, hosts: ["*.example.com"]}
      - {name: own-deny, action: deny, hosts: [ok.example.com]}
`);
    const a = (h: string) => p.decide(req(h, 443, { agent: 'a' }));
    expect(a('evil.example.com')).toMatchObject({ verdict: 'deny', rule: 'shared-deny' });
    expect(a('ok.example.com')).toMatchObject({ verdict: 'deny', rule: 'own-deny' });
    expect(a('x.example.com')).toMatchObject({ verdict: 'allow', rule: 'own-allow' });
  });

  it('default deny: an empty policy allows nothing', () => {
    const p = compile('');
    expect(p.decide(req('example.com'))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    expect(p.decide(req('10.0.0.1'))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
  });
});

describe('ports', () => {
  const p = compile(`rules:
  - {name: default-allow, action: allow, hosts: [a.test]}
  - {name: listed, action: allow, hosts: [b.test], ports: [80, 443, "8000-8100"]}
  - {name: all-ports-allow, action: allow, hosts: [c.test], ports: ["1-65535"]}
  - {name: no-smtp, action: deny, hosts: [c.test], ports: [25]}
  - {name: deny-default, action: deny, hosts: [d.test]}
  - {name: d-allow, action: allow, hosts: [d.test], ports: [443, 8443]}
`);
  it.each([
    ['a.test', 443, 'allow', 'default-allow'],
    ['a.test', 80, 'deny', null],
    ['a.test', 8443, 'deny', null],
    ['b.test', 80, 'allow', 'listed'],
    ['b.test', 443, 'allow', 'listed'],
    ['b.test', 8000, 'allow', 'listed'],
    ['b.test', 8050, 'allow', 'listed'],
    ['b.test', 8100, 'allow', 'listed'],
    ['b.test', 7999, 'deny', null],
    ['b.test', 8101, 'deny', null],
    ['b.test', 22, 'deny', null],
    ['c.test', 22, 'allow', 'all-ports-allow'],
    ['c.test', 25, 'deny', 'no-smtp'],
    ['d.test', 443, 'deny', 'deny-default'],
    ['d.test', 8443, 'deny', 'deny-default'],
    ['d.test', 1, 'deny', 'deny-default'],
  ] as const)('%s:%i -> %s (%s)', (host, port, verdict, rule) => {
    expect(p.decide(req(host, port))).toMatchObject({ verdict, rule });
  });

  it('ports do not apply to DNS (port null)', () => {
    expect(p.decide(req('b.test', null, { qtype: 'A' }))).toMatchObject({ verdict: 'allow', rule: 'listed' });
    expect(p.decide(req('d.test', null, { qtype: 'A' }))).toMatchObject({ verdict: 'deny', rule: 'deny-default' });
  });
});

describe('methods', () => {
  const p = compile(`rules:
  - {name: read-only, action: allow, hosts: [api.test], ports: [80, 443], methods: [GET, head]}
  - {name: any, action: allow, hosts: [open.test], ports: [80]}
  - {name: no-post, action: deny, hosts: [open.test], methods: [POST, PUT]}
`);
  it.each([
    ['api.test', 'GET', 'allow', 'rule_allow'],
    ['api.test', 'HEAD', 'allow', 'rule_allow'],
    ['api.test', 'POST', 'deny', 'method_not_allowed'],
    ['api.test', 'DELETE', 'deny', 'method_not_allowed'],
    ['open.test', 'GET', 'allow', 'rule_allow'],
    ['open.test', 'POST', 'deny', 'rule_deny'],
    ['open.test', 'post', 'deny', 'rule_deny'],
    ['open.test', 'PUT', 'deny', 'rule_deny'],
    ['open.test', 'PATCH', 'allow', 'rule_allow'],
  ] as const)('%s %s -> %s %s', (host, method, verdict, reason) => {
    expect(p.decide(req(host, 80, { method }))).toMatchObject({ verdict, reason });
  });

  it('a method refusal names the rule that matched all but the method', () => {
    expect(p.decide(req('api.test', 80, { method: 'POST' }))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'read-only' });
  });

  it('an opaque tunnel is refused by a rule that constrains methods, in allow or deny rules', () => {
    expect(p.decide(req('api.test', 443, { method: 'CONNECT' }))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'read-only' });
    expect(p.decide(req('api.test', 443))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'read-only' });
    expect(p.decide(req('open.test', 80, { method: 'CONNECT' }))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'no-post' });
  });

  it('a method miss on one rule does not hide another rule that allows', () => {
    const q = compile(`rules:
  - {name: get-only, action: allow, hosts: [x.test], ports: [80], methods: [GET]}
  - {name: post-too, action: allow, hosts: ["*.test"], ports: [80]}
`);
    expect(q.decide(req('x.test', 80, { method: 'POST' }))).toMatchObject({ verdict: 'allow', rule: 'post-too' });
  });
});

/**
 * A tunnel the proxy cannot see into may carry any method: it is allowed only when every method would
 * be. One row per shape of policy; `tunnel` is the CONNECT answer, `inspected` the answer for a tunnel
 * whose requests are each decided again, `dns` the resolver's.
 */
describe('methods and tunnels (fail closed)', () => {
  const p = compile(`rules:
  - {name: ro, action: allow, hosts: [ro.test], ports: [443, 80], methods: [GET, HEAD]}
  - {name: broad, action: allow, hosts: ["*.mixed.test"], ports: [443]}
  - {name: api-get, action: allow, hosts: [api.mixed.test], ports: [443], methods: [GET]}
  - {name: open, action: allow, hosts: [open.test], ports: [443]}
  - {name: open-no-post, action: deny, hosts: [open.test], methods: [POST]}
  - {name: glob-ro, action: allow, hosts: ["*.glob.test"], methods: [GET]}
  - {name: other-port, action: allow, hosts: [ports.test], ports: [443]}
  - {name: other-port-ro, action: allow, hosts: [ports.test], ports: [8443], methods: [GET]}
  - {name: deny-other-port, action: deny, hosts: [dp.test], ports: [80], methods: [POST]}
  - {name: dp, action: allow, hosts: [dp.test], ports: [443]}
  - {name: net-ro, action: allow, cidrs: [192.0.2.0/24], methods: [GET]}
  - {name: pinned-ro, action: allow, hosts: [pin.test], cidrs: [192.0.2.0/24], methods: [GET]}
  - {name: pinned-any, action: allow, hosts: [pin.test], cidrs: [198.51.100.0/24]}
  - {name: no-post-net, action: deny, cidrs: [203.0.113.0/24], methods: [POST]}
  - {name: net-any, action: allow, cidrs: [203.0.113.0/24]}
  - {name: a-lot, action: allow, hosts: [any.test], ports: [443]}
  - {name: no-connect-ish, action: deny, hosts: [any.test], ports: [443], methods: [GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS]}
agents:
  - name: reader
    rules:
      - {name: reader-ro, action: allow, hosts: [agent.test], methods: [GET]}
`);
  it.each([
    // host, port, tunnel verdict/reason/rule, inspected-tunnel verdict
    ['ro.test', 443, 'method_not_allowed', 'ro', 'allow'],
    ['ro.test', 80, 'method_not_allowed', 'ro', 'allow'],
    ['api.mixed.test', 443, 'rule_allow', 'broad', 'allow'],
    ['x.mixed.test', 443, 'rule_allow', 'broad', 'allow'],
    ['open.test', 443, 'method_not_allowed', 'open-no-post', 'allow'],
    ['a.glob.test', 443, 'method_not_allowed', 'glob-ro', 'allow'],
    ['ports.test', 443, 'rule_allow', 'other-port', 'allow'],
    ['ports.test', 8443, 'method_not_allowed', 'other-port-ro', 'allow'],
    ['dp.test', 443, 'rule_allow', 'dp', 'allow'],
    ['192.0.2.7', 443, 'method_not_allowed', 'net-ro', 'allow'],
    ['203.0.113.9', 443, 'method_not_allowed', 'no-post-net', 'allow'],
    ['any.test', 443, 'method_not_allowed', 'no-connect-ish', 'allow'],
    ['nothing.test', 443, 'no_rule', null, 'deny'],
  ] as const)('CONNECT %s:%s -> %s', (host, port, reason, rule, inspected) => {
    const verdict = reason === 'rule_allow' ? 'allow' : 'deny';
    expect(p.decide(req(host, port))).toMatchObject({ verdict, reason, rule });
    expect(p.decide(req(host, port, { method: 'CONNECT' }))).toMatchObject({ verdict, reason, rule });
    expect(p.decide(req(host, port, { tunnel: 'opaque' }))).toMatchObject({ verdict, reason, rule });
    expect(p.decide(req(host, port, { tunnel: 'inspected' })).verdict).toBe(inspected);
  });

  it('a name pinned by two rules: the tunnel gets only the addresses of the rule without methods', () => {
    const d = p.decide(req('pin.test', 443));
    expect(d).toMatchObject({ verdict: 'allow', rule: 'pinned-any' });
    expect(p.vetAddresses(d.constraint, ['192.0.2.1', '198.51.100.1'])).toEqual({ allowed: ['198.51.100.1'], refused: ['192.0.2.1'] });
    const get = p.decide(req('pin.test', 443, { method: 'GET' }));
    expect(p.vetAddresses(get.constraint, ['192.0.2.1', '198.51.100.1']).allowed).toEqual(['192.0.2.1', '198.51.100.1']);
  });

  it('a deny rule with methods and CIDRs refuses the addresses of an allowed name for a tunnel, not for GET', () => {
    const q = compile(`rules:
  - {name: named, action: allow, hosts: [n.test]}
  - {name: no-post-here, action: deny, cidrs: [192.0.2.0/24], methods: [POST]}
`);
    const t = q.decide(req('n.test', 443));
    expect(t.verdict).toBe('allow');
    expect(q.vetAddresses(t.constraint, ['192.0.2.1', '198.51.100.1'])).toEqual({ allowed: ['198.51.100.1'], refused: ['192.0.2.1'] });
    const g = q.decide(req('n.test', 443, { method: 'GET' }));
    expect(q.vetAddresses(g.constraint, ['192.0.2.1']).allowed).toEqual(['192.0.2.1']);
  });

  it('per-agent rules with methods refuse that agent\'s tunnels too', () => {
    expect(p.decide(req('agent.test', 443, { agent: 'reader' }))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', rule: 'reader-ro' });
    expect(p.decide(req('agent.test', 443, { agent: 'reader', method: 'GET' }))).toMatchObject({ verdict: 'allow', rule: 'reader-ro' });
  });

  it('report mode keeps the refusal as the recorded verdict', () => {
    const q = compile(`mode: report
rules:
  - {name: ro, action: allow, hosts: [ro.test], methods: [GET]}
`);
    expect(q.decide(req('ro.test', 443))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed', mode: 'report', rule: 'ro' });
  });

  it('plain requests and DNS are judged as before: by their method, and not by methods at all', () => {
    expect(p.decide(req('ro.test', 80, { method: 'GET' }))).toMatchObject({ verdict: 'allow', rule: 'ro' });
    expect(p.decide(req('ro.test', 80, { method: 'POST' }))).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed' });
    expect(p.decide(req('open.test', 443, { method: 'GET' }))).toMatchObject({ verdict: 'allow', rule: 'open' });
    expect(p.decide(req('ro.test', null, { qtype: 'A' })).verdict).toBe('allow');
    expect(p.decide(req('open.test', null, { qtype: 'AAAA' })).verdict).toBe('allow');
  });
});

describe('CIDR rules match IP-literal targets only', () => {
  const p = compile(`rules:
  - {name: net10, action: allow, cidrs: [10.0.0.0/8]}
  - {name: no-10-99, action: deny, cidrs: [10.99.0.0/16]}
  - {name: v6, action: allow, cidrs: ["2001:db8::/32"], ports: [443, 8443]}
  - {name: no-v6-host, action: deny, cidrs: ["2001:db8::dead/128"]}
  - {name: one, action: allow, cidrs: [192.0.2.7]}
  - {name: star, action: allow, hosts: ["*"]}
`);
  it.each([
    ['10.1.2.3', 443, 'allow', 'net10'],
    ['10.1.2.3', 80, 'deny', null],
    ['10.99.1.1', 443, 'deny', 'no-10-99'],
    ['11.0.0.1', 443, 'deny', null],
    ['167772161', 443, 'allow', 'net10'], // 10.0.0.1 spelled as a number
    ['0xa.1', 443, 'allow', 'net10'],
    ['192.0.2.7', 443, 'allow', 'one'],
    ['192.0.2.8', 443, 'deny', null],
    ['[2001:db8::1]', 443, 'allow', 'v6'],
    ['[2001:DB8:0::1]', 8443, 'allow', 'v6'],
    ['[2001:db8::dead]', 443, 'deny', 'no-v6-host'],
    ['[2001:db9::1]', 443, 'deny', null],
    // IPv4-mapped literals reach the IPv4 host, so IPv4 rules (deny first of all) judge them.
    ['[::ffff:10.99.0.1]', 443, 'deny', 'no-10-99'],
    ['[::ffff:10.1.0.1]', 443, 'allow', 'net10'],
  ] as const)('%s:%i -> %s (%s)', (host, port, verdict, rule) => {
    expect(p.decide(req(host, port))).toMatchObject({ verdict, rule });
  });

  it('a name is never matched by a CIDR-only rule, and the bare * never matches an address', () => {
    const q = compile(`rules:\n  - {name: net, action: allow, cidrs: [0.0.0.0/0, "::/0"]}\n`);
    expect(q.decide(req('example.com'))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    const s = compile(`rules:\n  - {name: star, action: allow, hosts: ["*"]}\n`);
    expect(s.decide(req('1.2.3.4'))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    expect(s.decide(req('[::1]'))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
  });
});

describe('hosts + cidrs: address constraints', () => {
  const p = compile(`rules:
  - {name: internal, action: allow, hosts: [svc.corp.test], cidrs: [10.20.0.0/16, "fd00:20::/32"]}
  - {name: second, action: allow, hosts: ["*.corp.test"], cidrs: [10.30.0.0/16]}
  - {name: public, action: allow, hosts: [www.test, api.test]}
  - {name: no-meta, action: deny, cidrs: [169.254.0.0/16]}
  - {name: no-10-20-9, action: deny, cidrs: [10.20.9.0/24], ports: [443]}
`);
  it('an allowed name carries its CIDRs; vetAddresses refuses addresses outside them', () => {
    const d = p.decide(req('svc.corp.test'));
    expect(d).toMatchObject({ verdict: 'allow', rule: 'internal' });
    expect(d.constraint!.allowCidrs!.sort()).toEqual(['10.20.0.0/16', '10.30.0.0/16', 'fd00:20::/32']);
    const v = p.vetAddresses(d.constraint, ['10.20.1.1', '10.30.0.5', '10.40.0.1', '8.8.8.8', 'fd00:20::1', 'fd00:21::1', '10.20.9.9', '169.254.1.1']);
    expect(v.allowed).toEqual(['10.20.1.1', '10.30.0.5', 'fd00:20::1']);
    expect(v.refused).toEqual(['10.40.0.1', '8.8.8.8', 'fd00:21::1', '10.20.9.9', '169.254.1.1']);
  });

  it('deny CIDRs follow a name even without allow CIDRs, honouring the deny rule ports', () => {
    const d443 = p.decide(req('www.test'));
    expect(d443.verdict).toBe('allow');
    expect(d443.constraint!.allowCidrs).toBeNull();
    expect(d443.constraint!.denyCidrs.sort()).toEqual(['10.20.9.0/24', '169.254.0.0/16']);
    expect(p.vetAddresses(d443.constraint, ['1.1.1.1', '169.254.169.254', '10.20.9.1', '::ffff:169.254.0.1'])).toEqual({
      allowed: ['1.1.1.1'],
      refused: ['169.254.169.254', '10.20.9.1', '::ffff:169.254.0.1'],
    });
  });

  it('no constraint when nothing beyond the guard applies; an address target gets none', () => {
    const q = compile(`rules:\n  - {name: a, action: allow, hosts: [a.test], cidrs: [10.0.0.0/8]}\n`);
    expect(q.decide(req('10.1.1.1'))).toMatchObject({ verdict: 'allow', constraint: null });
    const r = compile(`rules:\n  - {name: a, action: allow, hosts: [a.test]}\n`);
    expect(r.decide(req('a.test')).constraint).toBeNull();
    expect(r.vetAddresses(null, ['1.2.3.4'])).toEqual({ allowed: ['1.2.3.4'], refused: [] });
  });

  it('an unparseable address is refused (fail closed)', () => {
    const d = p.decide(req('svc.corp.test'));
    expect(p.vetAddresses(d.constraint, ['not-an-ip', '10.20.0.1'])).toEqual({ allowed: ['10.20.0.1'], refused: ['not-an-ip'] });
  });
});

describe('agents', () => {
  const p = compile(`mode: enforce
rules:
  - {name: shared, action: allow, hosts: [shared.test]}
agents:
  - name: builder
    token_sha256: "${'b'.repeat(64)}"
    rules:
      - {name: build, action: allow, hosts: [registry.test]}
  - name: isolated
    token_sha256: "${'c'.repeat(64)}"
    shared_rules: false
    mode: report
    rules:
      - {name: own, action: allow, hosts: [own.test]}
`);
  it.each([
    [null, 'shared.test', 'allow'],
    [null, 'registry.test', 'deny'],
    [null, 'own.test', 'deny'],
    ['builder', 'shared.test', 'allow'],
    ['builder', 'registry.test', 'allow'],
    ['builder', 'own.test', 'deny'],
    ['isolated', 'own.test', 'allow'],
    ['isolated', 'shared.test', 'deny'],
    ['isolated', 'registry.test', 'deny'],
    ['nobody', 'shared.test', 'deny'],
  ] as const)('%s -> %s: %s', (agent, host, verdict) => {
    expect(p.decide(req(host, 443, { agent })).verdict).toBe(verdict);
  });

  it('an unknown agent gets nothing (no_rule)', () => {
    expect(p.decide(req('shared.test', 443, { agent: 'nobody' }))).toMatchObject({ reason: 'no_rule', rule: null });
  });

  it('mode: per policy, overridden per agent', () => {
    expect(p.modeFor(null)).toBe('enforce');
    expect(p.modeFor('builder')).toBe('enforce');
    expect(p.modeFor('isolated')).toBe('report');
    expect(p.decide(req('shared.test', 443, { agent: 'isolated' }))).toMatchObject({ verdict: 'deny', mode: 'report' });
    expect(p.decide(req('shared.test', 443, { agent: 'builder' }))).toMatchObject({ verdict: 'allow', mode: 'enforce' });
    const r = compile(`mode: report\nagents:\n  - {name: strict, mode: enforce, sources: [10.0.0.0/8]}\n  - {name: lax, sources: [11.0.0.0/8]}\n`);
    expect(r.modeFor(null)).toBe('report');
    expect(r.modeFor('lax')).toBe('report');
    expect(r.modeFor('strict')).toBe('enforce');
    expect(r.decide(req('x.test'))).toMatchObject({ verdict: 'deny', mode: 'report' });
    expect(r.decide(req('x.test', 443, { agent: 'strict' }))).toMatchObject({ verdict: 'deny', mode: 'enforce' });
  });
});

describe('DNS query types', () => {
  const p = compile(`rules:
  - {name: web, action: allow, hosts: ["*.web.test"]}
  - {name: verify, action: allow, hosts: [_acme.web.test], dns_types: [txt]}
  - {name: block, action: deny, hosts: [bad.web.test]}
`);
  const dns = (host: string, qtype: string) => p.decide(req(host, null, { qtype }));
  it.each([
    ['a.web.test', 'A', 'allow', 'rule_allow'],
    ['a.web.test', 'AAAA', 'allow', 'rule_allow'],
    ['a.web.test', 'CNAME', 'allow', 'rule_allow'],
    ['a.web.test', 'HTTPS', 'allow', 'rule_allow'],
    ['a.web.test', 'SVCB', 'allow', 'rule_allow'],
    ['a.web.test', 'aaaa', 'allow', 'rule_allow'],
    ['a.web.test', 'TXT', 'deny', 'qtype_refused'],
    ['a.web.test', 'NULL', 'deny', 'qtype_refused'],
    ['a.web.test', 'ANY', 'deny', 'qtype_refused'],
    ['a.web.test', 'AXFR', 'deny', 'qtype_refused'],
    ['a.web.test', 'MX', 'deny', 'qtype_refused'],
    ['a.web.test', 'SRV', 'deny', 'qtype_refused'],
    ['_acme.web.test', 'TXT', 'allow', 'rule_allow'],
    ['_acme.web.test', 'MX', 'deny', 'qtype_refused'],
    ['bad.web.test', 'A', 'deny', 'rule_deny'],
    ['elsewhere.test', 'A', 'deny', 'no_rule'],
    ['elsewhere.test', 'TXT', 'deny', 'qtype_refused'],
  ] as const)('%s %s -> %s %s', (host, qtype, verdict, reason) => {
    expect(dns(host, qtype)).toMatchObject({ verdict, reason });
  });
});

describe('scaling: 100,000 rules stay correct', () => {
  it('exact, suffix, glob and CIDR rules at scale', () => {
    const N = 100_000;
    const lines: string[] = ['version: 1', 'rules:'];
    for (let i = 0; i < N; i++) {
      switch (i % 5) {
        case 0: lines.push(`  - {name: e${i}, action: allow, hosts: [h${i}.exact.test]}`); break;
        case 1: lines.push(`  - {name: s${i}, action: allow, hosts: ["*.s${i}.test"]}`); break;
        case 2: lines.push(`  - {name: g${i}, action: allow, hosts: ["api-*.g${i}.test"]}`); break;
        case 3: lines.push(`  - {name: c${i}, action: allow, cidrs: [10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32]}`); break;
        default: lines.push(`  - {name: d${i}, action: deny, hosts: [h${i - 4}.exact.test, "x.s${i - 3}.test"]}`);
      }
    }
    const p = compilePolicy(parsePolicyText(lines.join('\n'), 'big.yaml'), {});
    for (const i of [0, 5, 45_000, 99_995]) {
      expect(p.decide(req(`h${i}.exact.test`))).toMatchObject({ verdict: 'deny', rule: `d${i + 4}` });
      expect(p.decide(req(`h${i + 1}.exact.test`))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
      expect(p.decide(req(`a.b.s${i + 1}.test`))).toMatchObject({ verdict: 'allow', rule: `s${i + 1}` });
      expect(p.decide(req(`x.s${i + 1}.test`))).toMatchObject({ verdict: 'deny', rule: `d${i + 4}` });
      expect(p.decide(req(`s${i + 1}.test`))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
      expect(p.decide(req(`api-z.g${i + 2}.test`))).toMatchObject({ verdict: 'allow', rule: `g${i + 2}` });
      expect(p.decide(req(`api-z.g${i + 3}.test`))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
      const j = i + 3;
      expect(p.decide(req(`10.${(j >> 16) & 255}.${(j >> 8) & 255}.${j & 255}`))).toMatchObject({ verdict: 'allow', rule: `c${j}` });
      const k = i + 2;
      expect(p.decide(req(`10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`))).toMatchObject({ verdict: 'deny', reason: 'no_rule' });
    }
    // Parsing and compiling 100k rules takes seconds alone and several times that on a loaded 2-core box.
  }, 120_000);
});
