import type { Answer } from 'dns-packet';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';
import { decodeSvcb, SvcbError } from '../../src/dns/svcb.js';
import { dig, useFilter } from './client.js';

// RDATA built by hand from RFC 9460 §2.2, independently of the module under test.
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const name = (n: string): Buffer =>
  Buffer.concat([...(n === '.' ? [] : n.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]))), Buffer.from([0])]);
const param = (key: number, value: Buffer): Buffer => Buffer.concat([u16(key), u16(value.length), value]);
const alpn = (...ids: string[]): Buffer => param(1, Buffer.concat(ids.map((i) => Buffer.concat([Buffer.from([i.length]), Buffer.from(i)]))));
const v4hint = (...a: string[]): Buffer => param(4, Buffer.from(a.flatMap((x) => ipaddr.parse(x).toByteArray())));
const v6hint = (...a: string[]): Buffer => param(6, Buffer.from(a.flatMap((x) => ipaddr.parse(x).toByteArray())));
const mandatory = (...keys: number[]): Buffer => param(0, Buffer.concat(keys.map(u16)));
const rdata = (prio: number, target: string, ...params: Buffer[]): Buffer => Buffer.concat([u16(prio), name(target), ...params]);

describe('decodeSvcb refuses what RFC 9460 calls malformed', () => {
  const bad: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['priority only', u16(1)],
    ['compressed TargetName', Buffer.concat([u16(1), Buffer.from([0xc0, 0x0c])])],
    ['TargetName without its root', Buffer.concat([u16(1), Buffer.from([3, 0x61, 0x62, 0x63])])],
    ['label with a dot inside', Buffer.concat([u16(1), Buffer.from([3, 0x61, 0x2e, 0x62, 0])])],
    ['keys out of order', rdata(1, '.', v4hint('1.1.1.1'), alpn('h2'))],
    ['duplicate key', rdata(1, '.', alpn('h2'), alpn('h3'))],
    ['truncated value', Buffer.concat([rdata(1, '.'), u16(4), u16(8), Buffer.from([1, 1, 1, 1])])],
    ['truncated header', Buffer.concat([rdata(1, '.'), Buffer.from([0, 4, 0])])],
    ['ipv4hint of 5 bytes', rdata(1, '.', param(4, Buffer.from([1, 1, 1, 1, 1])))],
    ['empty ipv4hint', rdata(1, '.', param(4, Buffer.alloc(0)))],
    ['ipv6hint of 15 bytes', rdata(1, '.', param(6, Buffer.alloc(15)))],
    ['port of 3 bytes', rdata(1, '.', param(3, Buffer.from([0, 1, 2])))],
    ['alpn with an empty id', rdata(1, '.', param(1, Buffer.from([0])))],
    ['alpn id past its value', rdata(1, '.', param(1, Buffer.from([5, 0x68])))],
    ['no-default-alpn with a value', rdata(1, '.', alpn('h2'), param(2, Buffer.from([1])))],
    ['no-default-alpn without alpn', rdata(1, '.', param(2, Buffer.alloc(0)))],
    ['mandatory lists itself', rdata(1, '.', mandatory(0))],
    ['mandatory key missing', rdata(1, '.', mandatory(4), alpn('h2'))],
    ['mandatory keys unsorted', rdata(1, '.', mandatory(4, 1), alpn('h2'), v4hint('1.1.1.1'))],
    ['the invalid key 65535', rdata(1, '.', param(65535, Buffer.alloc(0)))],
    ['dohpath not UTF-8', rdata(1, '.', param(7, Buffer.from([0xff, 0xfe])))],
  ];
  it.each(bad)('%s', (_label, buf) => {
    expect(() => decodeSvcb(buf)).toThrow(SvcbError);
  });

  it('decodes a well-formed record, keeping unknown keys apart', () => {
    const r = decodeSvcb(rdata(1, 'svc.example.com', alpn('h2', 'h3'), v4hint('1.2.3.4'), param(9, Buffer.from('x'))));
    expect(r).toMatchObject({ priority: 1, target: 'svc.example.com', unknownKeys: [9] });
    expect(r.params.map((p) => p.key)).toEqual([1, 4]);
  });
});

const POLICY = `
version: 1
rules:
  - {name: example, action: allow, hosts: ["example.com", "*.example.com"]}
  - {name: pinned, action: allow, hosts: [pinned.example.net], cidrs: [93.184.216.0/24]}
`;

const https = (owner: string, data: Buffer): Answer => ({ type: 'UNKNOWN_65', name: owner, ttl: 60, data }) as unknown as Answer;
const svcb = (owner: string, data: Buffer): Answer => ({ type: 'UNKNOWN_64', name: owner, ttl: 60, data }) as unknown as Answer;

const ZONE: Record<string, Answer[]> = {
  'hints.example.com': [
    https(
      'hints.example.com',
      rdata(1, '.', alpn('h2'), v4hint('169.254.169.254', '93.184.216.34', '127.0.0.1'), v6hint('::1', '2606:2800::1', '64:ff9b::a9fe:a9fe')),
    ),
  ],
  'onlybad.example.com': [https('onlybad.example.com', rdata(1, '.', alpn('h2'), v4hint('127.0.0.1', '10.0.0.1'), v6hint('::1')))],
  'target.example.com': [
    https('target.example.com', rdata(1, 'cdn.attacker.test', alpn('h2'), v4hint('93.184.216.35'))),
    https('target.example.com', rdata(2, 'api.example.com', alpn('h2'))),
    https('target.example.com', rdata(3, '.', alpn('h2'))),
  ],
  'alias.example.com': [https('alias.example.com', rdata(0, 'cdn.attacker.test'))],
  'aliasok.example.com': [https('aliasok.example.com', rdata(0, 'api.example.com', alpn('h2')))],
  'junk.example.com': [
    https('junk.example.com', Buffer.concat([u16(1), Buffer.from([0xc0, 0x0c])])),
    https('junk.example.com', rdata(1, '.', v4hint('93.184.216.36'), alpn('h2'))),
    https('junk.example.com', rdata(1, '.', param(4, Buffer.from([93, 184, 216])))),
  ],
  'mandatory.example.com': [
    https('mandatory.example.com', rdata(1, '.', mandatory(4), v4hint('169.254.169.254'))),
    https('mandatory.example.com', rdata(2, '.', mandatory(9), param(9, Buffer.from('x')))),
    https('mandatory.example.com', rdata(3, '.', alpn('h2'), param(9, Buffer.from('x')))),
  ],
  'svcb.example.com': [svcb('svcb.example.com', rdata(1, '.', v4hint('169.254.169.254', '93.184.216.37')))],
  'pinned.example.net': [https('pinned.example.net', rdata(1, '.', v4hint('8.8.4.4', '93.184.216.38')))],
};

const env = useFilter(ZONE, POLICY);

const records = async (qname: string, type = 'HTTPS'): Promise<string[]> => {
  const r = await dig(env.filter.port, qname, type);
  expect(r.status).toBe('NOERROR');
  return r.answers.filter((a) => a.type === type).map((a) => a.data);
};

describe('HTTPS and SVCB answers in the DNS filter (dig)', () => {
  it('removes hints the guard refuses (metadata, loopback, NAT64 of metadata) and keeps the rest', async () => {
    expect(await records('hints.example.com')).toEqual(['1 . alpn="h2" ipv4hint=93.184.216.34 ipv6hint=2606:2800::1']);
    const stripped = env.sink.forHost('hints.example.com')[0].detail?.stripped;
    expect(stripped).toEqual([
      { address: '169.254.169.254', why: 'metadata' },
      { address: '127.0.0.1', why: 'loopback' },
      { address: '::1', why: 'loopback' },
      { address: '64:ff9b::a9fe:a9fe', why: 'nat64:metadata' },
    ]);
  });

  it('drops a hint parameter whose every address is refused, and records the deny', async () => {
    expect(await records('onlybad.example.com')).toEqual(['1 . alpn="h2"']);
    expect(env.sink.forHost('onlybad.example.com')[0]).toMatchObject({ verdict: 'deny', reason: 'private_address' });
  });

  it('decides TargetName like a CNAME target: a refused one drops the record', async () => {
    expect(await records('target.example.com')).toEqual(['2 api.example.com. alpn="h2"', '3 . alpn="h2"']);
    expect(env.sink.forHost('target.example.com')[0].detail?.dropped).toEqual([{ owner: 'target.example.com', target: 'cdn.attacker.test', why: 'target_denied' }]);
    expect(await records('alias.example.com')).toEqual([]);
    expect(await records('aliasok.example.com')).toEqual(['0 api.example.com.']);
  });

  it('drops records it cannot decode strictly, never passing them through', async () => {
    expect(await records('junk.example.com')).toEqual([]);
    expect((env.sink.forHost('junk.example.com')[0].detail?.dropped as unknown[]).length).toBe(3);
  });

  it('drops a record that would lose a mandatory key, removes unknown keys otherwise', async () => {
    expect(await records('mandatory.example.com')).toEqual(['3 . alpn="h2"']);
  });

  it('vets SVCB (type 64) the same way, and applies the rule CIDRs to hints', async () => {
    expect(await records('svcb.example.com', 'SVCB')).toEqual(['1 . ipv4hint=93.184.216.37']);
    expect(await records('pinned.example.net')).toEqual(['1 . ipv4hint=93.184.216.38']);
    expect(env.sink.forHost('pinned.example.net')[0].detail?.stripped).toEqual([{ address: '8.8.4.4', why: 'rule_cidr' }]);
  });
});
