import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { UNSAFE, displaySafe } from '../decisions/display.js';
import { FAILURE_REASONS } from '../decisions/record.js';
import { REASONS } from '../policy/vocabulary.js';
import { INDEX_HTML } from './page/html.js';
import { APP_CSS } from './page/css.js';

/**
 * The dashboard's files, shipped in the package (src/admin/page/*.js are emitted to dist by tsc's
 * allowJs) and read once at start: no CDN, nothing fetched at runtime. `shared.js` is generated from
 * the TypeScript the CLI uses, so the page escapes recorded text with the very same displaySafe().
 */
const SCRIPTS = ['app.js', 'api.js', 'dom.js', 'live.js', 'overview.js', 'approvals.js', 'policy.js', 'chart.js'];

/**
 * No inline script or style, nothing from elsewhere, no framing. `connect-src 'self'` covers fetch and
 * the EventSource; `form-action 'self'` keeps the sign-in form from posting anywhere else.
 */
export const PAGE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

export function sharedModule(): string {
  return [
    `export const UNSAFE = ${UNSAFE};`,
    `export const displaySafe = ${displaySafe.toString()};`,
    `// DNS and upstream failures: the policy allowed these, so they read as errors, not as denials.`,
    `export const FAILURES = ${JSON.stringify(FAILURE_REASONS)};`,
    `export const REASONS = ${JSON.stringify(REASONS)};`,
    '',
  ].join('\n');
}

interface Asset {
  type: string;
  body: string;
}

function loadAssets(): Map<string, Asset> {
  const js = 'text/javascript; charset=utf-8';
  const files = new Map<string, Asset>([
    ['/', { type: 'text/html; charset=utf-8', body: INDEX_HTML }],
    ['/ui/app.css', { type: 'text/css; charset=utf-8', body: APP_CSS }],
    ['/ui/shared.js', { type: js, body: sharedModule() }],
  ]);
  for (const name of SCRIPTS) files.set(`/ui/${name}`, { type: js, body: readFileSync(new URL(`./page/${name}`, import.meta.url), 'utf8') });
  return files;
}

/** The page's paths: public (they hold no data) and static for the origin guard. */
export const ASSET_PATHS: readonly string[] = ['/', '/ui/app.css', '/ui/shared.js', ...SCRIPTS.map((n) => `/ui/${n}`)];

export function registerAssets(app: FastifyInstance): void {
  const assets = loadAssets();
  for (const [path, a] of assets) {
    app.get(path, async (_req, reply) => {
      reply.header('cache-control', 'no-cache');
      return reply.type(a.type).send(a.body);
    });
  }
}

/** Headers on every admin answer: the page's CSP applies to anything a browser might render. */
export function registerSecurityHeaders(app: FastifyInstance): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('content-security-policy', PAGE_CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    reply.header('referrer-policy', 'no-referrer');
    return payload;
  });
}
