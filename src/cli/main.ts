import { Command } from 'commander';
import { createRequire } from 'node:module';
import { registerServe } from './commands/serve.js';
import { registerCheck } from './commands/check.js';
import { registerPolicy } from './commands/policy.js';
import { registerLog } from './commands/log.js';
import { registerFirewall } from './commands/firewall.js';
import { registerCerts } from './commands/certs.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command('agent-egress')
    .description('Egress firewall for AI agents: a forward HTTP/HTTPS proxy that allows only what a policy names.')
    .version(pkg.version)
    .showHelpAfterError();
  registerServe(program);
  registerCheck(program);
  registerPolicy(program);
  registerLog(program);
  registerFirewall(program);
  registerCerts(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride((err) => {
    // Usage errors are bad input: exit 2, like every other refusal of input.
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
  await program.parseAsync(argv);
}
