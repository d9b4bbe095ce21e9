import { describe, expect, it } from 'vitest';
import { normalizeHost, normalizeHostFull } from '../../src/net/host.js';
import { canonicalIp, canonicalIpFull, cidrContains, parseCidr, sourceAddress, sourceAddressFull } from '../../src/net/ip.js';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';
import { parseConnectTarget, TargetError } from '../../src/net/target.js';
import { prng } from '../helpers/prng.js';

// The fast paths feed the address guard: one that answers differently from the full path on any
// input is a bypass. They are checked here against the full path over a seeded corpus of every
// spelling class a host or an address can take.

const FULLWIDTH = (s: string) => s.replace(/[0-9]/g, (d) => String.fromCharCode(0xff10 + Number(d)));
const DOTS = ['.', '。', '．', '｡'];

function corpus(seed: number, size: number): string[] {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const octet = () => pick([0, 1, 9, 10, 99, 100, 127, 169, 192, 254, 255, 256, 300, 999, int(256), int(256), int(256)]);
  const spell = (n: number): string =>
    pick([
      () => String(n),
      () => String(n),
      () => `0${n.toString(8)}`,
      () => `0x${n.toString(16)}`,
      () => `0X${n.toString(16).toUpperCase()}`,
      () => `00${n}`,
      () => `0${n}`,
      () => FULLWIDTH(String(n)),
      () => `${n}`.replace(/^(\d)/, '%3$1'),
      () => `+${n}`,
      () => `${n} `,
    ])();
  const ipv4 = (): string => {
    const count = pick([4, 4, 4, 4, 1, 2, 3, 5]);
    const parts = Array.from({ length: count }, () => (count === 1 && r() < 0.5 ? String(int(2 ** 32 + 5)) : spell(octet())));
    const dot = r() < 0.85 ? '.' : pick(DOTS);
    let s = parts.join(dot);
    if (r() < 0.1) s += '.';
    if (r() < 0.05) s += '..';
    if (r() < 0.05) s = `.${s}`;
    if (r() < 0.05) s = s.replace('.', '%2e');
    return s;
  };
  const canonical4 = () => Array.from({ length: 4 }, () => String(int(256))).join('.');
  const label = (): string => {
    const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';
    const len = pick([1, 2, 3, 5, 8, 12, 63, 64, int(70)]);
    let s = '';
    for (let i = 0; i < len; i++) s += chars[int(r() < 0.7 ? 26 : chars.length)];
    return pick([
      s,
      s,
      s,
      s.toUpperCase(),
      `-${s}`,
      `${s}-`,
      String(int(1000)),
      `0x${int(65536).toString(16)}`,
      `0X${int(65536).toString(16).toUpperCase()}`,
      '0x',
      `xn--${s}`,
      'bücher',
      'ＥＸＡＭＰＬＥ',
      'İstanbul',
      'ß',
      `${s}\u00ad`,
      `${s}%41`,
      `${s}@`,
      `${s}:`,
      '',
    ]);
  };
  const name = (): string => {
    const labels = Array.from({ length: 1 + int(5) }, label);
    let s = labels.join(r() < 0.9 ? '.' : pick(DOTS));
    if (r() < 0.2) s += '.';
    if (r() < 0.03) s += '.';
    if (r() < 0.03) s = s.repeat(1 + int(6));
    return s;
  };
  const v6 = (): string => {
    const tail = pick([canonical4(), ipv4(), '1', 'ffff', '0:1', '7f00:1']);
    const s = pick([
      `::ffff:${tail}`,
      `::${tail}`,
      `64:ff9b::${tail}`,
      `2002:${int(65536).toString(16)}::${tail}`,
      '::1',
      '::',
      `fe80::1%${pick(['eth0', '25', '%', 'a b', ''])}`,
      `FD00::${int(65536).toString(16).toUpperCase()}`,
      `0:0:0:0:0:ffff:${tail}`,
      `::ffff:${int(65536).toString(16)}:${int(65536).toString(16)}`,
    ]);
    return pick([`[${s}]`, `[${s}]`, s, `[${s.replace('%', '%25')}]`, `[${s}`]);
  };
  const out: string[] = [];
  for (let i = 0; i < size; i++) out.push(pick([ipv4, ipv4, canonical4, name, name, v6])());
  return out;
}

type Outcome = { value: unknown } | { error: string; message: string };
function outcome(fn: () => unknown): Outcome {
  try {
    return { value: fn() };
  } catch (err) {
    return { error: (err as Error).constructor.name, message: (err as Error).message };
  }
}

const inputs = corpus(0x15f00d, 25_000);

describe('fast paths agree with the full paths', () => {
  it('the corpus covers each spelling class with both outcomes', () => {
    const results = inputs.map((s) => outcome(() => normalizeHost(s)));
    const kinds = new Set(results.map((o) => ('value' in o ? `${(o.value as { kind: string }).kind}` : 'error')));
    expect([...kinds].sort()).toEqual(['error', 'ip', 'name']);
    // Enough of each shape reaches the fast paths and the full path alike for the comparison to mean something.
    const fastV4 = inputs.filter((s) => /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.test(s));
    expect(fastV4.length).toBeGreaterThan(1000);
    expect(inputs.filter((s) => /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)+\.?$/i.test(s)).length).toBeGreaterThan(1000);
    expect(inputs.filter((s) => /^\d+(?:\.\d+){0,4}\.?$/.test(s) && !fastV4.includes(s)).length).toBeGreaterThan(1000);
  });

  it('normalizeHost: same value, kind, or error class and message as normalizeHostFull', () => {
    let compared = 0;
    for (const s of inputs) {
      expect(outcome(() => normalizeHost(s)), JSON.stringify(s)).toEqual(outcome(() => normalizeHostFull(s)));
      compared++;
    }
    expect(compared).toBe(inputs.length);
  });

  it('canonicalIp: same answer as canonicalIpFull, first call and memoised call', () => {
    for (const s of inputs) {
      const want = canonicalIpFull(s);
      expect(canonicalIp(s), JSON.stringify(s)).toEqual(want);
      expect(canonicalIp(s), JSON.stringify(s)).toEqual(want);
    }
  });

  it('sourceAddress: same answer as sourceAddressFull', () => {
    for (const s of inputs) expect(sourceAddress(s), JSON.stringify(s)).toEqual(sourceAddressFull(s));
  });

  it('identify: the memoised source match names the same agent as a direct CIDR check', () => {
    const agents = [
      { name: 'lab', sources: ['127.0.0.0/8', '::1/128'] },
      { name: 'office', sources: ['10.0.0.0/8', 'fd00::/8'] },
      { name: 'inner', sources: ['10.1.0.0/16', '192.168.0.0/16'] },
      { name: 'wide', sources: ['0.0.0.0/1'] },
    ];
    const yaml = `version: 1\nagents:\n${agents.map((a) => `  - name: ${a.name}\n    sources: [${a.sources.map((c) => `"${c}"`).join(', ')}]`).join('\n')}\n`;
    const policy = compilePolicy(parsePolicyText(yaml, 'fast.yaml'), {});
    const cidrs = agents.map((a) => ({ name: a.name, cidrs: a.sources.map(parseCidr) }));
    let matched = 0;
    for (const s of [...inputs, ...inputs.slice(0, 2000)]) {
      const src = sourceAddressFull(s);
      const want = src === null ? null : cidrs.find((a) => a.cidrs.some((c) => c.family === src.family && cidrContains(c, src.address)))?.name ?? null;
      if (want !== null) matched++;
      expect(policy.identify({ authPresent: false, sourceAddress: s }), JSON.stringify(s)).toEqual({ ok: true, agent: want });
    }
    expect(matched).toBeGreaterThan(1000);
  });

  it('ports: the hand-written port check accepts exactly /^[1-9][0-9]{0,4}$/ up to 65535', () => {
    const r = prng(443);
    const chars = '0123456789+-xXe. \u0661\uff11';
    const ports = ['', '0', '1', '65535', '65536', '99999', '100000', '0443', '00', '443e1', '0x1bb', '+443', '-1', '１'];
    for (let i = 0; i < 20_000; i++) {
      let p = '';
      const len = 1 + Math.floor(r() * 7);
      for (let j = 0; j < len; j++) p += r() < 0.8 ? String(Math.floor(r() * 10)) : chars[Math.floor(r() * chars.length)];
      ports.push(p);
    }
    let accepted = 0;
    for (const p of ports) {
      const want = /^[1-9][0-9]{0,4}$/.test(p) && Number(p) <= 65535 ? Number(p) : null;
      const got = outcome(() => parseConnectTarget(`example.com:${p}`).port);
      if (want === null) expect((got as { error?: string }).error, JSON.stringify(p)).toBe(TargetError.name);
      else expect(got, JSON.stringify(p)).toEqual({ value: want });
      if (want !== null) accepted++;
    }
    expect(accepted).toBeGreaterThan(1000);
    expect(ports.length - accepted).toBeGreaterThan(1000);
  });
});
