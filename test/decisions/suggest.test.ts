import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runSuggest } from '../../src/cli/commands/suggest.js';
import { DROP_HOSTS, dropHostEntry } from '../../src/decisions/drop-hosts.js';
import { createSqliteStore } from '../../src/decisions/store/sqlite.js';
import { safeGlobParent, suggestPolicy } from '../../src/decisions/suggest.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { normalizeHost } from '../../src/net/host.js';
import { rec, tempDir } from './helpers.js';

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

describe('policy suggest from a real store, starting from the current policy', () => {
  const CURRENT = `# Our policy: keep this comment.
version: 1
mode: report
address_guard:
  exempt: [127.0.0.1/32]
rules:
  - name: local-dev
    action: allow
    hosts: [localhost]
    ports: [8080]
  - name: no-attacker
    action: deny
    hosts: ["*.attacker.example"]
agents:
  - name: ci-bot
    token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    rules: []
`;
  const now = Date.now();
  const at = (s: number) => new Date(now - s * 1000).toISOString();
  const d = (host: string, port: number, over: Parameters<typeof rec>[0] = {}) =>
    rec({ host, port, agent: null, verdict: 'deny', mode: 'report', reason: 'no_rule', rule: null, address: null, time: at(60), ...over });

  it('keeps every rule, deny and comment, adds only no_rule destinations, flags drop hosts, and -o says what it wrote', async () => {
    const t = tempDir('ae-suggest-');
    try {
      const file = join(t.dir, 'policy.yaml');
      writeFileSync(file, CURRENT);
      const store = createSqliteStore({ dataDir: t.dir, flushIntervalMs: 10 });
      for (const r of [
        d('a.example.com', 443), d('b.example.com', 443), d('b.example.com', 443),
        // report mode: forwarded, then the lookup failed: still a destination the policy lacks
        d('api.openai.com', 443, { verdict: 'allow', reason: 'dns_failure', status: 502 }),
        d('evil.attacker.example', 443, { reason: 'rule_deny', rule: 'no-attacker' }),
        // recorded before the deny rule existed: the current policy still refuses it
        d('exfil1.attacker.example', 443),
        d('metadata.example.net', 80, { reason: 'private_address', address: '169.254.169.254' }),
        d('pastebin.com', 443), d('transfer.sh', 443), d('gist.githubusercontent.com', 443), d('x.ngrok-free.app', 443),
        d('localhost', 8080, { verdict: 'allow', reason: 'rule_allow', rule: 'local-dev', address: '127.0.0.1' }),
        d('registry.npmjs.org', 443, { agent: 'ci-bot' }),
        d('old.example.org', 443, { time: at(3 * 86_400) }),
      ]) store.write(r);
      store.flush();
      const out = join(t.dir, 'suggested.yaml');
      const notes: string[] = [];
      await runSuggest({ dataDir: t.dir, since: '1h', policy: file, output: out }, () => { throw new Error('nothing on stdout with -o'); }, (s) => void notes.push(s));
      await store.close();
      const text = readFileSync(out, 'utf8');
      expect(notes.join('')).toMatch(new RegExp(`^wrote ${out.replace(/[/.]/g, '\\$&')}: ${file.replace(/[/.]/g, '\\$&')} plus 3 suggested rule\\(s\\); 4 paste/file-drop host\\(s\\) flagged`));

      const doc = parse(text);
      expect(text).toContain('# Our policy: keep this comment.');
      expect(doc.mode).toBe('report');
      expect(doc.address_guard).toEqual({ exempt: ['127.0.0.1/32'] });
      const shared = doc.rules as { name: string; action: string; hosts?: string[]; ports?: number[] }[];
      expect(shared.slice(0, 2)).toEqual([
        { name: 'local-dev', action: 'allow', hosts: ['localhost'], ports: [8080] },
        { name: 'no-attacker', action: 'deny', hosts: ['*.attacker.example'] },
      ]);
      expect(shared.slice(2)).toEqual([
        { name: 'suggested-example.com', action: 'allow', hosts: ['a.example.com', 'b.example.com'], ports: [443] },
        { name: 'suggested-openai.com', action: 'allow', hosts: ['api.openai.com'], ports: [443] },
      ]);
      expect(doc.agents[0].rules).toEqual([{ name: 'suggested-npmjs.org', action: 'allow', hosts: ['registry.npmjs.org'], ports: [443] }]);
      const body = text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n');
      for (const never of ['attacker.example"]', 'evil', 'exfil1', 'metadata', 'pastebin', 'transfer.sh', 'gist.', 'ngrok', 'old.example.org']) {
        expect(body.replace('"*.attacker.example"]', '')).not.toContain(never);
      }
      for (const f of ['pastebin.com:443', 'transfer.sh:443', 'gist.githubusercontent.com:443', 'x.ngrok-free.app:443']) expect(text).toMatch(new RegExp(`^# +! ${f.replace(/\./g, '\\.')}`, 'm'));
      expect(text).toMatch(/^# +- evil\.attacker\.example: refused by a deny rule \(no-attacker\)/m);
      expect(text).toMatch(/^# +- metadata\.example\.net: refused by the address guard/m);

      // The real loader takes it; the additions are allowed, the rest still decided as before.
      const policy = compilePolicy(parsePolicyText(text, out));
      const decide = (host: string, port: number, agent: string | null = null) => policy.decide({ agent, host: normalizeHost(host), port });
      expect(decide('api.openai.com', 443).reason).toBe('rule_allow');
      expect(decide('b.example.com', 443).reason).toBe('rule_allow');
      expect(decide('registry.npmjs.org', 443, 'ci-bot').reason).toBe('rule_allow');
      expect(decide('registry.npmjs.org', 443).reason).toBe('no_rule');
      expect(decide('exfil1.attacker.example', 443).reason).toBe('rule_deny');
      expect(decide('localhost', 8080).reason).toBe('rule_allow');
      expect(decide('pastebin.com', 443).reason).toBe('no_rule');
    } finally {
      t.cleanup();
    }
  });

  it('without a current policy, says it starts from an empty one; with nothing to add, says so', async () => {
    const s = suggestPolicy([d('pastebin.com', 443)]);
    expect(s.added).toEqual([]);
    expect(s.yaml).toMatch(/starting from <empty policy>/);
    expect(s.yaml).toMatch(/Nothing to add/);
    expect(parse(s.yaml).rules).toEqual([]);
  });

  it('the drop-host list matches subdomains, not look-alikes', () => {
    expect(dropHostEntry('pastebin.com')).toBe('pastebin.com');
    expect(dropHostEntry('abc.webhook.site')).toBe('webhook.site');
    expect(dropHostEntry('file.io')).toBe('file.io');
    expect(dropHostEntry('0x0.st')).toBe('0x0.st');
    expect(dropHostEntry('notpastebin.com')).toBeNull();
    expect(dropHostEntry('api.github.com')).toBeNull();
    expect(DROP_HOSTS.length).toBeGreaterThan(40);
  });
});
