import { describe, expect, it } from 'vitest';
import { UNSAFE, safeJson, safeJsonText } from '../../src/decisions/display.js';

describe('safeJson', () => {
  it('escapes every unsafe code point of the BMP and beyond, and leaves printable ASCII as JSON.stringify writes it', () => {
    let escaped = 0;
    const wrong: number[] = [];
    const cps = [...Array(0x3000).keys(), 0xfeff, 0xfff9, 0xfffb, 0x110bd, 0x1d173, 0xe0001, 0xe0020, 0xe007f, 0x1f600, 0x10ffff];
    for (const cp of cps) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue; // lone surrogates: below
      const ch = String.fromCodePoint(cp);
      const value = { host: `a${ch}b` };
      const out = safeJson(value);
      UNSAFE.lastIndex = 0;
      if (UNSAFE.test(ch)) escaped++;
      UNSAFE.lastIndex = 0;
      const bad = JSON.parse(out).host !== value.host || UNSAFE.test(out) || (cp >= 0x20 && cp <= 0x7e && out !== JSON.stringify(value));
      if (bad) wrong.push(cp);
    }
    expect(wrong).toEqual([]);
    // DEL, C1, the bidi controls, zero-width characters, U+2028/2029, the BOM, tag characters.
    expect(escaped).toBeGreaterThan(100);
  });

  it('escapes raw control characters and lone surrogates in JSON text as stored', () => {
    expect(safeJsonText('{"a":"\u001b[2J\u007f\u0085\ud800\u202e"}')).toBe('{"a":"\\u001b[2J\\u007f\\u0085\\ud800\\u202e"}');
    expect(safeJsonText('{"a":"plain ascii ~"}')).toBe('{"a":"plain ascii ~"}');
  });
});
