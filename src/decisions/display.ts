/**
 * Recorded strings (hosts, paths, agents, header values, DNS query names) come from whoever sent the
 * request. On a terminal, a page or a chat channel an ESC, OSC, CR/LF, C1 or bidi-override character
 * would act instead of showing: clear the screen, set the title, start a fake "allow" row, reverse the
 * text. Every human-readable output passes them through displaySafe(); JSON output uses safeJson(),
 * which is the same JSON value (parses back identically) with those characters written as \u escapes.
 */

// C0, DEL and C1 controls (Cc), format characters (Cf: bidi embeddings/overrides/isolates, marks,
// zero-width characters, the BOM, tag characters), the line and paragraph separators, lone surrogates.
// Exported with displaySafe so the admin page can embed the very same code (see admin/page.ts).
export const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

/**
 * The string with every control, format, separator and lone-surrogate character replaced by a visible
 * escape: \xHH below U+0100, \u{HHHH} above. Everything else (including non-ASCII letters) is kept.
 */
export function displaySafe(value: string): string {
  return value.replace(UNSAFE, (ch) => {
    const cp = ch.codePointAt(0) ?? 0;
    return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u{${cp.toString(16)}}`;
  });
}

// Every character UNSAFE can match lies outside printable ASCII (DEL and C1 included).
const NOT_PRINTABLE_ASCII = /[^\x20-\x7e]/;

/** JSON.stringify, with every character displaySafe() would escape written as a JSON \u escape instead. */
export function safeJson(value: unknown): string {
  return safeJsonText(JSON.stringify(value));
}

/**
 * The same for JSON text already serialised (e.g. as stored): outside strings JSON is printable ASCII,
 * so only string contents change, and only in how they are spelled.
 */
export function safeJsonText(json: string): string {
  // Printable ASCII only (most records): nothing to escape, and this test is far cheaper than the
  // Unicode-property scan below.
  if (!NOT_PRINTABLE_ASCII.test(json)) return json;
  return json.replace(UNSAFE, (ch) => {
    let out = '';
    for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`;
    return out;
  });
}

/** Whether the string has anything displaySafe() would change. */
export function hasUnsafe(value: string): boolean {
  UNSAFE.lastIndex = 0;
  return UNSAFE.test(value);
}
