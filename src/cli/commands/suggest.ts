import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { buildFilter, QueryError } from '../../decisions/query.js';
import type { DecisionRecord } from '../../decisions/record.js';
import { openSqliteStoreReadOnly } from '../../decisions/store/sqlite.js';

export interface SuggestCliOptions {
  dataDir?: string;
  since?: string;
  agent?: string;
  output?: string;
}

/** Page through the store oldest-last; bounded so a huge log cannot exhaust memory. */
export async function runSuggest(o: SuggestCliOptions, out: (s: string) => void = (s) => void process.stdout.write(s)): Promise<void> {
  const f = buildFilter({ since: o.since ?? '24h', agent: o.agent });
  const store = openSqliteStoreReadOnly({ dataDir: o.dataDir ?? './data' });
  const records: DecisionRecord[] = [];
  try {
    let cursor: string | undefined;
    for (let i = 0; i < 1000; i++) {
      const page = await store.query({ ...f, limit: 1000, cursor });
      records.push(...page.records);
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
  } finally {
    await store.close();
  }
  const comment = `From ${records.length} decisions since ${new Date(f.sinceMs!).toISOString()}${o.agent ? ` by agent ${o.agent}` : ''}.`;
  // Loaded here, not at start-up: the public suffix list is large and only this command needs it.
  const { suggestPolicy } = await import('../../decisions/suggest.js');
  const { yaml } = suggestPolicy(records, { comment });
  if (o.output) writeFileSync(o.output, yaml, { mode: 0o644 });
  else out(yaml);
}

export function registerSuggest(policyCommand: Command): void {
  policyCommand
    .command('suggest')
    .description('write a policy that allows what the recorded decisions show (typically from a report-mode run)')
    .option('--data-dir <dir>', 'directory of the decision store', './data')
    .option('--since <when>', 'decisions from this time: a duration back (24h, 7d) or ISO-8601', '24h')
    .option('--agent <name>', 'only this agent')
    .option('-o, --output <file>', 'write the policy here instead of stdout')
    .action(async (o: SuggestCliOptions) => {
      try {
        await runSuggest(o);
      } catch (err) {
        // A bad --since is bad input (exit 2); an unreadable store or file is a failure (exit 1).
        if (err instanceof QueryError) {
          process.stderr.write(`agent-egress policy suggest: --${err.message}\n`);
          process.exitCode = 2;
          return;
        }
        process.stderr.write(`agent-egress policy suggest: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
