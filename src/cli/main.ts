import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { createRequire } from 'node:module';
import { UsageError, usageLine } from './parse.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };

/** Commander outcomes that are not errors: asked-for help and the version. */
const SUCCESS = new Set(['commander.helpDisplayed', 'commander.version']);

/**
 * Every command, however deeply nested, reports a usage error (bad flag value, unknown flag, missing
 * argument) as one line naming the command and the cause, and throws instead of exiting, so that
 * `main` alone decides the exit code. Commander copies these settings only to commands created after
 * they are set, so they are applied to the finished tree.
 */
function configureUsageErrors(cmd: Command): void {
  cmd
    .showHelpAfterError(false)
    .configureOutput({ outputError: (str, write) => write(usageLine(commandPath(cmd), str)) })
    .exitOverride();
  for (const opt of cmd.options) {
    const parse = opt.parseArg;
    if (!parse) continue;
    // A parser's own typed error (DnsConfigError, ...) is still a bad value: report it like one.
    opt.parseArg = <T>(value: string, previous: T): T => {
      try {
        return parse(value, previous);
      } catch (err) {
        if (err instanceof InvalidArgumentError || !(err instanceof Error)) throw err;
        throw new InvalidArgumentError(err.message);
      }
    };
  }
  for (const sub of cmd.commands) configureUsageErrors(sub);
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

type Register = (program: Command) => void;

/**
 * Each command's module, loaded only when it is needed: a command's module pulls in everything it runs
 * (the log readers, the firewall renderers, the certificate tools, ...), and a long-running `serve` would
 * otherwise carry all of it in memory (docs/performance.md, memory). In help order.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  serve: async () => (await import('./commands/serve.js')).registerServe,
  check: async () => (await import('./commands/check.js')).registerCheck,
  policy: async () => (await import('./commands/policy.js')).registerPolicy,
  log: async () => (await import('./commands/log.js')).registerLog,
  firewall: async () => (await import('./commands/firewall.js')).registerFirewall,
  certs: async () => (await import('./commands/certs.js')).registerCerts,
  approvals: async () => (await import('./commands/approvals.js')).registerApprovals,
};

/**
 * The commands `argv` runs: the one it names, or, when it names none (help, `--version`, a misspelt
 * command that commander should answer with a suggestion), all of them.
 */
export function commandsFor(argv: string[]): string[] {
  const first = argv[2];
  return first !== undefined && Object.hasOwn(COMMANDS, first) ? [first] : Object.keys(COMMANDS);
}

/** The program with the given commands registered (all by default). */
export async function buildProgram(commands: string[] = Object.keys(COMMANDS)): Promise<Command> {
  const program = new Command('agent-egress')
    .description('Egress firewall for AI agents: a forward HTTP/HTTPS proxy that allows only what a policy names.')
    .version(pkg.version);
  const registers = await Promise.all(commands.map((name) => COMMANDS[name]!()));
  for (const register of registers) register(program);
  configureUsageErrors(program);
  return program;
}

/** Exit codes: 0 help/version, 2 any usage error (README: "a bad flag is one line and exit 2"). */
export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram(commandsFor(argv));
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(SUCCESS.has(err.code) ? 0 : 2);
    if (err instanceof UsageError) {
      process.stderr.write(usageLine(err.command ?? 'agent-egress', err.message));
      process.exit(2);
    }
    throw err;
  }
}
