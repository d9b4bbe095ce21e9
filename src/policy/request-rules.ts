import { normalizePath, PathError } from '../net/path.js';
import { ValueError } from './schema.js';

/**
 * Request rules: what a rule says about the request itself (beyond host, port and method), the same
 * for plain HTTP and inspected HTTPS. Pure: compiled once per policy load, matched per request.
 */

/** What the proxy saw of one HTTP request, after normalisation (net/path.ts). */
export interface HttpFacts {
  /** Normalised path, without the query. */
  path: string;
  /** Raw query string including the leading "?", or "". */
  query: string;
  /** Request headers, lower-case names (as Node parses them). */
  headers: Record<string, string | string[] | undefined>;
}

/** A rule's request matchers as written (after validation). null = not constrained. */
export interface RequestRuleSpec {
  /** Globs on the normalised path: `*` one segment (or part of one), `**` any number of segments. */
  paths: string[] | null;
  /** Parameter name → value globs; the parameter must be present and each of its values match one. */
  query: Record<string, string[]> | null;
  /** Lower-case header name → value globs; the header must be present and each value match one. */
  matchHeaders: Record<string, string[]> | null;
}

export interface RequestMatcher {
  matches(facts: HttpFacts): boolean;
}

const escape = (s: string): string => s.replace(/[.+^${}()|[\]\\?]/g, '\\$&');

/**
 * A path glob as written in a policy: must start with "/", is normalised like a request path
 * (so `/a/./b` and `/a//b` mean `/a/b`), and may use `*` and `**` (the latter only as a whole segment).
 */
export function parsePathPattern(text: string): string {
  if (!text.startsWith('/')) throw new ValueError(`path pattern ${JSON.stringify(text)} must start with "/"`);
  if (/[?#]/.test(text)) throw new ValueError(`path pattern ${JSON.stringify(text)} must not contain "?" or "#" (use query)`);
  for (const seg of text.split('/')) {
    if (seg.includes('**') && seg !== '**') throw new ValueError(`path pattern ${JSON.stringify(text)}: "**" must be a whole segment`);
  }
  try {
    // `*` is a legal path character, so the pattern normalises like a path.
    return normalizePath(text);
  } catch (e) {
    if (e instanceof PathError) throw new ValueError(`path pattern ${JSON.stringify(text)}: ${e.message}`);
    throw e;
  }
}

/** Compile a normalised path glob: `*` alone = exactly one non-empty segment; `**` = zero or more segments. */
export function pathGlob(pattern: string): RegExp {
  const segs = pattern.split('/').slice(1);
  let re = '^';
  segs.forEach((s, i) => {
    if (s === '**') {
      // Zero or more segments; at the end it also takes a trailing slash.
      re += i === segs.length - 1 ? '(?:/.*)?' : '(?:/[^/]+)*';
    } else if (s === '*') re += '/[^/]+';
    else re += '/' + s.split('*').map(escape).join('[^/]*');
  });
  if (pattern === '/') re = '^/';
  return new RegExp(re + '$');
}

/** A value glob (query values, header values): `*` any run of characters, everything else literal. */
function valueGlob(g: string): RegExp {
  return new RegExp('^' + g.split('*').map(escape).join('.*') + '$', 's');
}

export function compileRequestRule(spec: RequestRuleSpec): RequestMatcher | null {
  if (spec.paths === null && spec.query === null && spec.matchHeaders === null) return null;
  const paths = spec.paths?.map(pathGlob) ?? null;
  const query = spec.query ? Object.entries(spec.query).map(([k, vs]) => [k, vs.map(valueGlob)] as const) : null;
  const headers = spec.matchHeaders ? Object.entries(spec.matchHeaders).map(([k, vs]) => [k, vs.map(valueGlob)] as const) : null;
  return {
    matches(f: HttpFacts): boolean {
      if (paths !== null && !paths.some((r) => r.test(f.path))) return false;
      if (query !== null) {
        const params = new URLSearchParams(f.query);
        for (const [k, globs] of query) {
          const vals = params.getAll(k);
          if (vals.length === 0 || !vals.every((v) => globs.some((g) => g.test(v)))) return false;
        }
      }
      if (headers !== null) {
        for (const [k, globs] of headers) {
          const v = f.headers[k];
          const vals = v === undefined ? [] : Array.isArray(v) ? v : [v];
          if (vals.length === 0 || !vals.every((x) => globs.some((g) => g.test(x)))) return false;
        }
      }
      return true;
    },
  };
}
