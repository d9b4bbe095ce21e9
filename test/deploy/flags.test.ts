import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

// The deployments start `serve` with flags written in three places; a renamed flag would only show
// when a container fails to start. Every flag they pass must be one `serve --help` lists.
const ROOT = resolve(__dirname, '../..');
const help = execFileSync('node', [join(ROOT, 'bin/agent-egress.js'), 'serve', '--help'], { encoding: 'utf8' });
const known = new Set([...help.matchAll(/(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]));
const flagsOf = (args: string[]) => args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]);

/** Every flag must be known, and there must be flags at all: a loop over nothing proves nothing. */
function expectKnownFlags(args: string[], atLeast: string[]): void {
  const flags = flagsOf(args);
  expect(flags.length).toBeGreaterThan(0);
  expect(flags).toEqual(expect.arrayContaining(atLeast));
  for (const f of flags) expect(known, f).toContain(f);
}

it('serve --help lists the flags the deployments rely on', () => {
  expect(known.size).toBeGreaterThan(20);
  for (const f of ['--listen', '--policy', '--data-dir', '--admin-listen']) expect(known).toContain(f);
  expect(known).not.toContain('--no-such-flag');
});

describe('deployment commands use real serve flags', () => {
  it('Dockerfile CMD', () => {
    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))![1];
    const args = JSON.parse(cmd) as string[];
    expect(args[0]).toBe('serve');
    expectKnownFlags(args, ['--listen', '--policy']);
  });

  it('docker-compose.yml egress command', () => {
    const doc = parseAllDocuments(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'))[0].toJS();
    const egress = Object.values(doc.services as Record<string, { command?: string[]; image?: string }>).find((s) => s.command?.includes('serve'));
    expect(egress).toBeDefined();
    expectKnownFlags(egress!.command!, ['--listen', '--policy']);
  });

  it('Kubernetes Deployment args', () => {
    const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/deployment.yaml'), 'utf8')).map((d) => d.toJS());
    const dep = docs.find((d) => d?.kind === 'Deployment');
    const args = dep.spec.template.spec.containers[0].args as string[];
    expect(args).toContain('serve');
    expectKnownFlags(args, ['--listen', '--policy']);
  });
});
