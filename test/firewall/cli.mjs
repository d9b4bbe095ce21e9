// The firewall and certs commands on their own (the same registration main.ts uses), so these tests do
// not depend on every other command compiling.
import { Command } from 'commander';
import { registerFirewall } from '../../dist/cli/commands/firewall.js';
import { registerCerts } from '../../dist/cli/commands/certs.js';

const program = new Command('agent-egress');
registerFirewall(program);
registerCerts(program);
program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
await program.parseAsync(process.argv);
