import type { Command } from 'commander';
import { CertsError, DEFAULT_SERVER_NAMES, initCerts } from '../../certs/init.js';
import { ToolExecError } from '../../process/run-tool.js';
import { INSPECT_CA_FILE, INSPECT_CA_KEY_FILE } from '../../inspect/files.js';
import { parsePositiveInt } from '../parse.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerCerts(program: Command): void {
  const certs = program.command('certs').description('Certificates for TLS to the proxy and agent client certificates.');
  certs
    .command('init')
    .description('write a local CA, a server certificate and per-agent client certificates')
    .option('--dir <dir>', 'where to write them', 'certs')
    .option('--san <name-or-ip>', `server certificate name or address (repeatable; default ${DEFAULT_SERVER_NAMES.join(', ')})`, collect)
    .option('--agent <name>', 'issue a client certificate for this agent (repeatable)', collect)
    .option('--days <n>', 'validity in days', parsePositiveInt, 825)
    .option('--force', 'replace an existing CA (and so every certificate)')
    .option('--inspect', `write only the HTTPS inspection CA (${INSPECT_CA_FILE}, key ${INSPECT_CA_KEY_FILE} mode 0600) for serve --inspect-ca`)
    .action(async (flags: { dir: string; san?: string[]; agent?: string[]; days: number; force?: boolean; inspect?: boolean }) => {
      try {
        const r = flags.inspect ? await (await import('../../inspect/ca.js')).createInspectionCa(flags.dir, { days: Number(flags.days), force: !!flags.force }) : await initCerts({
          dir: flags.dir,
          serverNames: flags.san ?? [],
          agents: flags.agent ?? [],
          days: flags.days,
          force: !!flags.force,
        });
        for (const f of r.created) process.stdout.write(`created ${f}\n`);
        for (const f of r.reused) process.stdout.write(`kept    ${f}\n`);
      } catch (err) {
        if (err instanceof CertsError || err instanceof ToolExecError) {
          process.stderr.write(`agent-egress certs: ${err.message}\n`);
          process.exitCode = err instanceof CertsError ? 2 : 1;
          return;
        }
        throw err;
      }
    });
}
