import type { Answer } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { dig, useFilter } from './client.js';

// Rule CIDRs in the DNS filter: a name pinned to addresses (hosts + cidrs), deny CIDRs that follow every
// allowed name, IPv4 hidden in IPv6 answers, and records owned by names nobody asked about.
const POLICY = `
version: 1
rules:
  - {name: pinned, action: allow, hosts: [pinned.example.com], cidrs: [93.184.216.0/24, "2606:2800::/32"]}
  - {name: open, action: allow, hosts: ["*.open.test"]}
  - {name: no-8888, action: deny, cidrs: [8.8.8.0/24]}
`;

const rr = (type: 'A' | 'AAAA', name: string, data: string): Answer => ({ type, name, ttl: 60, data });

const ZONE: Record<string, Answer[]> = {
  'pinned.example.com': [
    rr('A', 'pinned.example.com', '93.184.216.70'),
    rr('A', 'pinned.example.com', '8.8.4.4'),
    rr('A', 'pinned.example.com', '93.184.216.71'),
    rr('AAAA', 'pinned.example.com', '2606:2800::1'),
    rr('AAAA', 'pinned.example.com', '2a00:1450::1'),
    // NAT64 and 6to4 forms of an address inside the pin are the same host; of one outside it, not.
    rr('AAAA', 'pinned.example.com', '64:ff9b::5db8:d846'),
    rr('AAAA', 'pinned.example.com', '64:ff9b::808:404'),
  ],
  'nat64.open.test': [
    rr('AAAA', 'nat64.open.test', '64:ff9b::808:808'),
    rr('AAAA', 'nat64.open.test', '2002:808:808::1'),
    rr('AAAA', 'nat64.open.test', '::ffff:0:808:808'),
    rr('AAAA', 'nat64.open.test', '2001:0:4136:e378:8000:63bf:f7f7:f7f7'),
    rr('AAAA', 'nat64.open.test', '64:ff9b::909:909'),
  ],
  'v4.open.test': [rr('A', 'v4.open.test', '8.8.8.8'), rr('A', 'v4.open.test', '9.9.9.9')],
  // An upstream slipping in records owned by other names (cache poisoning shape).
  'bail.open.test': [
    rr('A', 'bail.open.test', '9.9.9.10'),
    rr('A', 'evil.attacker.test', '9.9.9.66'),
    rr('A', 'pinned.example.com', '9.9.9.67'),
  ],
};

const env = useFilter(ZONE, POLICY);

const data = (r: { answers: { type: string; data: string }[] }, type: string): string[] =>
  r.answers.filter((a) => a.type === type).map((a) => a.data);

describe('rule CIDRs in the DNS filter', () => {
  it('keeps only the addresses a hosts + cidrs rule pins the name to', async () => {
    const r = await dig(env.filter.port, 'pinned.example.com', 'A');
    expect(r.status).toBe('NOERROR');
    expect(data(r, 'A')).toEqual(['93.184.216.70', '93.184.216.71']);
    const rec = env.sink.forHost('pinned.example.com')[0];
    expect(rec).toMatchObject({ verdict: 'allow', rule: 'pinned' });
    expect(rec.detail?.stripped).toEqual([{ address: '8.8.4.4', why: 'rule_cidr' }]);

    const six = await dig(env.filter.port, 'pinned.example.com', 'AAAA');
    expect(data(six, 'AAAA')).toEqual(['2606:2800::1', '64:ff9b::5db8:d846']);
  });

  it('applies IPv4 deny CIDRs to every IPv6 form that embeds the IPv4', async () => {
    const r = await dig(env.filter.port, 'nat64.open.test', 'AAAA');
    expect(r.status).toBe('NOERROR');
    expect(data(r, 'AAAA')).toEqual(['64:ff9b::909:909']);
    const stripped = env.sink.forHost('nat64.open.test')[0].detail?.stripped as { address: string; why: string }[];
    expect(stripped.map((s) => s.address)).toEqual(['64:ff9b::808:808', '2002:808:808::1', '::ffff:0:808:808', '2001:0:4136:e378:8000:63bf:f7f7:f7f7']);
    expect(stripped.every((s) => s.why === 'rule_cidr')).toBe(true);

    const v4 = await dig(env.filter.port, 'v4.open.test', 'A');
    expect(data(v4, 'A')).toEqual(['9.9.9.9']);
  });

  it('drops records owned by names outside the question and its aliases', async () => {
    const r = await dig(env.filter.port, 'bail.open.test', 'A');
    expect(r.status).toBe('NOERROR');
    expect(r.answers).toEqual([{ name: 'bail.open.test.', type: 'A', data: '9.9.9.10' }]);
  });
});
