import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import semver from 'semver';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';

// `npm ci` prints EBADENGINE for every locked package whose engines.node the running Node does not
// satisfy. Reading the lock file checks the same thing for every package without running npm.
const ROOT = resolve(__dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
type Locked = { version: string; engines?: { node?: string } | string[]; dev?: boolean; optional?: boolean };
const locked = Object.entries(lock.packages as Record<string, Locked>).filter(([path]) => path.startsWith('node_modules/'));
const nodeRange = (p: Locked) => (p.engines && !Array.isArray(p.engines) ? p.engines.node : undefined);

describe('a clean install on Node 20 has no engine warnings', () => {
  it('the lock file lists the packages with their engines', () => {
    expect(locked.length).toBeGreaterThan(50);
    expect(locked.filter(([, p]) => nodeRange(p)).length).toBeGreaterThan(10);
  });

  it.each(['20.20.0', process.versions.node])('every locked package accepts Node %s', (version) => {
    const bad = locked.filter(([, p]) => nodeRange(p) && !semver.satisfies(version, nodeRange(p)!)).map(([path, p]) => `${path}@${p.version} wants ${nodeRange(p)}`);
    expect(bad).toEqual([]);
  });

  it('every runtime package accepts the oldest Node that package.json claims', () => {
    const oldest = semver.minVersion(pkg.engines.node)!.version;
    const bad = locked
      .filter(([, p]) => !p.dev && nodeRange(p) && !semver.satisfies(oldest, nodeRange(p)!))
      .map(([path, p]) => `${path}@${p.version} wants ${nodeRange(p)}`);
    expect(bad).toEqual([]);
  });

  it('the cookie pinned for light-my-request (Node 22 only from cookie 2) still serves its cookie parsing', async () => {
    const cookie = lock.packages['node_modules/light-my-request/node_modules/cookie'] ?? lock.packages['node_modules/cookie'];
    expect(semver.satisfies(process.versions.node, nodeRange(cookie) ?? '*')).toBe(true);
    const app = Fastify();
    app.get('/', async (_req, reply) => reply.header('set-cookie', 'session=abc; HttpOnly').send('ok'));
    const res = await app.inject({ url: '/', cookies: { sent: '1' } });
    await app.close();
    expect(res.statusCode).toBe(200);
    expect(res.cookies).toEqual([expect.objectContaining({ name: 'session', value: 'abc', httpOnly: true })]);
  });
});
