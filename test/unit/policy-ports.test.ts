import { describe, expect, it } from 'vitest';
import { normalizeHost } from '../../src/net/host.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { allowedPorts, formatPorts, portsHint } from '../../src/policy/ports.js';

const compile = (yaml: string) => compilePolicy(parsePolicyText(`version: 1\n${yaml}`, 't.yaml'), {});

const POLICY = `rules:
  - {name: web, action: allow, hosts: [example.com]}
  - {name: plain, action: allow, hosts: [http.example.com], ports: [80, 443, "8000-8100"]}
  - {name: read-only, action: allow, hosts: [ro.example.com], ports: [80], methods: [GET]}
  - {name: wide, action: allow, hosts: ["*.wide.example"], ports: ["1-65535"]}
  - {name: no-ssh, action: deny, hosts: ["*.wide.example"], ports: [22]}
  - {name: no-8050, action: deny, hosts: [http.example.com], ports: [8050]}
  - {name: net, action: allow, cidrs: [192.0.2.0/24], ports: [8443]}
agents:
  - name: bot
    token_sha256: "${'b'.repeat(64)}"
    shared_rules: false
    rules:
      - {name: bot-api, action: allow, hosts: [example.com], ports: [8080]}
`;

describe('allowedPorts: which ports decide() would allow', () => {
  const p = compile(POLICY);
  const q = (host: string, extra: { agent?: string | null; method?: string } = {}) =>
    allowedPorts(p, { agent: extra.agent ?? null, host: normalizeHost(host), method: extra.method });

  it.each([
    ['example.com', {}, [[443, 443]]],
    ['http.example.com', {}, [[80, 80], [443, 443], [8000, 8049], [8051, 8100]]],
    ['x.wide.example', {}, [[1, 21], [23, 65535]]],
    ['192.0.2.7', {}, [[8443, 8443]]],
    ['ro.example.com', { method: 'GET' }, [[80, 80]]],
    ['ro.example.com', { method: 'POST' }, []],
    ['example.com', { agent: 'bot' }, [[8080, 8080]]],
    ['http.example.com', { agent: 'bot' }, []],
    ['nowhere.example', {}, []],
    ['198.51.100.1', {}, []],
  ] as const)('%s %o → %o', (host, extra, want) => {
    expect(q(host, extra)).toEqual(want);
  });

  it('agrees with decide() on every port', () => {
    for (const host of ['http.example.com', 'x.wide.example', 'example.com']) {
      const h = normalizeHost(host);
      const ranges = allowedPorts(p, { agent: null, host: h })!;
      let allowed = 0;
      for (let port = 1; port <= 65535; port++) {
        const inRanges = ranges.some(([lo, hi]) => port >= lo && port <= hi);
        const ok = p.decide({ agent: null, host: h, port }).verdict === 'allow';
        if (ok) allowed++;
        if (inRanges !== ok) throw new Error(`${host}:${port}: ranges say ${inRanges}, decide says ${ok}`);
      }
      expect(allowed).toBeGreaterThan(0);
    }
  });

  it('a report-mode agent still gets only the ports that would really be allowed', () => {
    const r = compile(`mode: report\nrules:\n  - {name: web, action: allow, hosts: [example.com]}\n`);
    expect(allowedPorts(r, { agent: null, host: normalizeHost('example.com') })).toEqual([[443, 443]]);
    expect(r.decide({ agent: null, host: normalizeHost('example.com'), port: 80 })).toMatchObject({ verdict: 'deny', mode: 'report' });
  });

  it('gives up (null) rather than decide thousands of times for a policy with very many port edges', () => {
    const rules = Array.from({ length: 1500 }, (_, i) => `  - {name: r${i}, action: allow, hosts: [h${i}.example], ports: [${2 * i + 1000}]}`).join('\n');
    const big = compile(`rules:\n  - {name: w, action: allow, hosts: [example.com]}\n${rules}\n`);
    expect(allowedPorts(big, { agent: null, host: normalizeHost('example.com') })).toBeNull();
    // A host no rule matches still answers at once: nothing is allowed.
    expect(allowedPorts(big, { agent: null, host: normalizeHost('other.example') })).toEqual([]);
  });
});

describe('the hint sentence', () => {
  it.each([
    [[[443, 443]], 'example.com is allowed on port 443 only'],
    [[[80, 80], [443, 443]], 'example.com is allowed on ports 80 and 443 only'],
    [[[80, 80], [443, 443], [8000, 8100]], 'example.com is allowed on ports 80, 443 and 8000-8100 only'],
    [[[8000, 8100]], 'example.com is allowed on ports 8000-8100 only'],
  ] as const)('%o', (ranges, text) => {
    expect(portsHint('example.com', ranges)).toBe(text);
  });

  it('cuts long lists', () => {
    const many = Array.from({ length: 12 }, (_, i) => [i * 2 + 1, i * 2 + 1] as const);
    expect(formatPorts(many)).toBe('1, 3, 5, 7, 9, 11, 13, 15 and 4 more');
  });
});
