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

  it('docker-compose.fleet.yml second proxy command', () => {
    const doc = parseAllDocuments(readFileSync(join(ROOT, 'docker-compose.fleet.yml'), 'utf8'))[0].toJS();
    expectKnownFlags(doc.services['egress-2'].command, ['--listen', '--policy', '--data-dir']);
  });

  it('Kubernetes Deployment args', () => {
    const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/deployment.yaml'), 'utf8')).map((d) => d.toJS());
    const dep = docs.find((d) => d?.kind === 'Deployment');
    const args = dep.spec.template.spec.containers[0].args as string[];
    expect(args).toContain('serve');
    expectKnownFlags(args, ['--listen', '--policy']);
  });
});

describe('deployment environment variables are ones serve reads', () => {
  // A renamed variable would be ignored silently: the proxy would start on its defaults (a local SQLite
  // store, the host name as replica name) instead of failing.
  const served = async () => {
    const { buildProgram } = (await import(join(ROOT, 'dist/cli/main.js'))) as { buildProgram: () => Promise<import('commander').Command> };
    const serve = (await buildProgram()).commands.find((c) => c.name() === 'serve')!;
    return new Set(serve.options.map((o) => (o as unknown as { envVar?: string }).envVar).filter(Boolean));
  };
  const composeEnv = (file: string) =>
    Object.values(parseAllDocuments(readFileSync(join(ROOT, file), 'utf8'))[0].toJS().services as Record<string, { environment?: Record<string, string> }>).flatMap((s) =>
      Object.keys(s.environment ?? {}),
    );
  const k8sEnv = () => {
    const dep = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/deployment.yaml'), 'utf8')).map((d) => d.toJS()).find((d) => d?.kind === 'Deployment');
    return (dep.spec.template.spec.containers[0].env as { name: string }[]).map((e) => e.name);
  };

  it.each([
    ['deploy/kubernetes/deployment.yaml', k8sEnv, ['AGENT_EGRESS_ADMIN_TOKEN', 'AGENT_EGRESS_STORE', 'AGENT_EGRESS_REPLICA_NAME']],
    ['docker-compose.fleet.yml', () => composeEnv('docker-compose.fleet.yml'), ['AGENT_EGRESS_ADMIN_TOKEN', 'AGENT_EGRESS_STORE', 'AGENT_EGRESS_REPLICA_NAME']],
  ] as const)('%s', async (_file, names, atLeast) => {
    const known = await served();
    expect(known.size).toBeGreaterThan(20);
    const used = names().filter((n) => n.startsWith('AGENT_EGRESS_'));
    expect(used).toEqual(expect.arrayContaining([...atLeast]));
    expect(used.filter((n) => !known.has(n))).toEqual([]);
  });
});
