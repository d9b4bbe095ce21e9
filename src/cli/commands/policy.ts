import { Command } from 'commander';
import { loadPolicyFile } from '../../policy/index.js';
import { PolicyError } from '../../policy/types.js';
import { registerSuggest } from './suggest.js';

export function registerPolicy(program: Command): void {
  const policy = program.command('policy').description('Work with policy files');
  policy
    .command('validate')
    .description('Validate policy files; exit 0 when all are valid, 2 with every error (file:line:column: cause)')
    .argument('<files...>', 'policy YAML files')
    .action((files: string[]) => {
      let bad = false;
      for (const f of files) {
        try {
          const spec = loadPolicyFile(f);
          const agents = spec.agents.length ? `, ${spec.agents.length} agent(s)` : '';
          console.log(`${f}: ok (${spec.rules.length} shared rule(s)${agents}, hash ${spec.hash})`);
        } catch (err) {
          bad = true;
          console.error(err instanceof PolicyError ? err.message : `${f}: ${(err as Error).message}`);
        }
      }
      process.exit(bad ? 2 : 0);
    });
  registerSuggest(policy);
}
