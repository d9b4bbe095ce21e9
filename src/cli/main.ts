import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { createRequire } from 'node:module';
import { registerServe } from './commands/serve.js';
import { registerCheck } from './commands/check.js';
import { registerPolicy } from './commands/policy.js';
import { registerLog } from './commands/log.js';
import { registerFirewall } from './commands/firewall.js';
import { registerCerts } from './commands/certs.js';
import { registerApprovals } from './commands/approvals.js';
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

export function buildProgram(): Command {
  const program = new Command('agent-egress')
    .description('Egress firewall for AI agents: a forward HTTP/HTTPS proxy that allows only what a policy names.')
    .version(pkg.version);
  registerServe(program);
  registerCheck(program);
  registerPolicy(program);
  registerLog(program);
  registerFirewall(program);
  registerCerts(program);
  registerApprovals(program);
  configureUsageErrors(program);
  return program;
}

/** Exit codes: 0 help/version, 2 any usage error (README: "a bad flag is one line and exit 2"). */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
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
