import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { rawExchange } from '../helpers/raw.js';

// What a user copies from the shipped files must work: every policy validates, every quoted
// command uses commands and flags the CLI has, and the documented example credential authenticates.
const run = promisify(execFile);
const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'bin/agent-egress.js');

function walk(dir: string, keep: (f: string) => boolean): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name), keep) : keep(e.name) ? [join(dir, e.name)] : [],
  );
}
const policies = walk(join(ROOT, 'policies'), (f) => /\.ya?ml$/.test(f));
const documents = [join(ROOT, 'README.md'), ...walk(join(ROOT, 'docs'), (f) => f.endsWith('.md')), ...policies];

/** Every `agent-egress …` command line quoted in a file: shell continuations joined, cut at shell syntax. */
function quotedCommands(text: string): string[][] {
  const joined = text.replace(/\\\r?\n\s*/g, ' ');
  const out: string[][] = [];
  for (const m of joined.matchAll(/agent-egress(?:\.js)?[ \t]+([^\n`]*)/g)) {
    const words: string[] = [];
    for (const w of m[1].trim().split(/\s+/)) {
      if (/^(\||;|&&?|>|#|\)|\$\()/.test(w) || w.includes('$(')) break;
      words.push(w);
    }
    out.push(words);
  }
  return out;
}

/** Why this command line would be refused by the CLI (unknown command or flag), or null. */
function problem(program: Command, words: string[]): string | null {
  let cmd = program;
  let i = 0;
  while (i < words.length && cmd.commands.length && /^[a-z][a-z-]*$/.test(words[i])) {
    const sub = cmd.commands.find((c) => c.name() === words[i]);
    if (!sub) return cmd === program ? null : `unknown command "${words[i]}" after "${cmd.name()}"`;
    cmd = sub;
    i++;
  }
  if (cmd === program) return null; // prose such as "agent-egress is …", not a command
  const known = new Set(['--help', '-h', ...cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => !!x))]);
  for (const w of words.slice(i)) {
    const flag = w.replace(/^\[/, '').replace(/[\],.]+$/, '').split('=')[0];
    if (/^--?[a-z]/.test(flag) && !known.has(flag)) return `"${cmd.name()}" has no flag ${flag}`;
  }
  return null;
}

describe('shipped policies and quoted commands', () => {
  it.each(policies.map((p) => [relative(ROOT, p)]))('policy validate accepts %s', async (file) => {
    const r = await run('node', [BIN, 'policy', 'validate', join(ROOT, file)], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/: ok \(/);
  });

  it('every agent-egress command quoted in the README, docs and examples uses real commands and flags', async () => {
    const { buildProgram } = (await import(join(ROOT, 'dist/cli/main.js'))) as { buildProgram: () => Promise<Command> };
    const program = await buildProgram();
    let checked = 0;
    const problems: string[] = [];
    for (const file of documents) {
      for (const words of quotedCommands(readFileSync(file, 'utf8'))) {
        checked++;
        const why = problem(program, words);
        if (why) problems.push(`${relative(ROOT, file)}: agent-egress ${words.join(' ')}: ${why}`);
      }
    }
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThan(20);
  });

  it('the checker itself refuses a wrong flag and a wrong subcommand', async () => {
    const { buildProgram } = (await import(join(ROOT, 'dist/cli/main.js'))) as { buildProgram: () => Promise<Command> };
    const program = await buildProgram();
    const [a, b, c] = quotedCommands('run `agent-egress log query --verdict deny` or\nagent-egress policy sugest --since 1h\nagent-egress serve \\\n  --no-store | jq');
    expect(problem(program, a)).toMatch(/--verdict/);
    expect(problem(program, b)).toMatch(/sugest/);
    expect(c).toEqual(['serve', '--no-store']);
    expect(problem(program, c)).toBeNull();
  });
});

describe('policies/examples/per-agent-credentials.yaml', () => {
  let dns: TestDnsServer;
  let proxy: TestProxy;
  beforeAll(async () => {
    // The names resolve to loopback only here; nothing leaves the machine.
    dns = await startTestDnsServer({ 'registry.npmjs.org': { A: ['127.0.0.1'] } });
    proxy = await startTestProxy({
      policyFile: join(ROOT, 'policies/examples/per-agent-credentials.yaml'),
      flags: { allow: [], deny: [], allowAddress: ['127.0.0.1/32'] },
      dnsServers: [`127.0.0.1:${dns.port}`],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await dns?.close();
  });
  const connect = (host: string, user?: string) =>
    rawExchange(proxy.port, `CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n${user ? `Proxy-Authorization: Basic ${Buffer.from(user).toString('base64')}\r\n` : ''}\r\n`, 1_500);

  it('the documented credential ci-bot:test authenticates and gets the ci-bot rules; others get 407', async () => {
    expect(await connect('registry.npmjs.org')).toMatch(/^HTTP\/1\.1 407 /);
    expect(await connect('registry.npmjs.org', 'ci-bot:wrong')).toMatch(/^HTTP\/1\.1 407 /);
    expect(await connect('pastebin.com', 'ci-bot:test')).toMatch(/^HTTP\/1\.1 403 /);
    expect(await proxy.sink.waitFor((r) => r.host === 'pastebin.com')).toMatchObject({ agent: 'ci-bot', verdict: 'deny', rule: 'no-paste' });
    await connect('registry.npmjs.org', 'ci-bot:test');
    expect(await proxy.sink.waitFor((r) => r.host === 'registry.npmjs.org' && r.agent === 'ci-bot')).toMatchObject({ verdict: 'allow', rule: 'npm' });
  });
});
