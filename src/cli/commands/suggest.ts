import { readFileSync, writeFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { buildFilter, QueryError } from '../../decisions/query.js';
import type { DecisionRecord } from '../../decisions/record.js';
import { openStoreReader, type StoreFlags } from '../../decisions/store/open.js';
import { PolicyError } from '../../policy/types.js';
import { StoreUrlError } from '../../decisions/store/location.js';
import { storeOption, storePasswordFileOption } from '../store-flags.js';

export interface SuggestCliOptions extends StoreFlags {
  dataDir?: string;
  since?: string;
  agent?: string;
  output?: string;
  /** The policy to start from (kept whole; additions appended). */
  policy?: string;
}

/** Page through the store oldest-last; bounded so a huge log cannot exhaust memory. */
export async function runSuggest(
  o: SuggestCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
  note: (s: string) => void = (s) => void process.stderr.write(s),
): Promise<void> {
  // Read first: a missing policy file is reported before the store is opened.
  const current = o.policy ? { text: readFileSync(o.policy, 'utf8'), file: o.policy } : undefined;
  const f = buildFilter({ since: o.since ?? '24h', agent: o.agent });
  const store = await openStoreReader(o);
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
  const s = suggestPolicy(records, { comment, current });
  if (!current) note('agent-egress policy suggest: no --policy given: starting from an empty policy (pass --policy FILE to keep its rules and denies)\n');
  if (!o.output) return out(s.yaml);
  writeFileSync(o.output, s.yaml, { mode: 0o644 });
  const lines = [
    `wrote ${o.output}: ${o.policy ?? 'an empty policy'} plus ${s.added.length} suggested rule(s); ${s.flagged.length} paste/file-drop host(s) flagged, ${s.skipped.length} destination(s) not proposed (see the comments at the top)`,
    ...s.added.map((r) => `  + ${r.name}${r.agent ? ` (agent ${r.agent})` : ''}: ${[...(r.hosts ?? []), ...(r.cidrs ?? [])].join(', ')} ports ${r.ports.join(',')}`),
    ...s.flagged.map((f) => `  ! ${f.host}:${f.port} is a known paste/file-drop host (${f.entry}): not proposed`),
  ];
  note(lines.map((l) => `${l}\n`).join(''));
}

export function registerSuggest(policyCommand: Command): void {
  policyCommand
    .command('suggest')
    .description(
      'add to the current policy what the recorded decisions show was asked for and denied for lack of a rule (typically from a report-mode run); deny rules, guard refusals and known paste/file-drop hosts are never proposed',
    )
    .addOption(new Option('--policy <file>', 'the policy to start from: kept whole, additions appended and marked').env('AGENT_EGRESS_POLICY'))
    .option('--data-dir <dir>', 'directory of the decision store', './data')
    .addOption(storeOption())
    .addOption(storePasswordFileOption())
    .option('--since <when>', 'decisions from this time: a duration back (24h, 7d) or ISO-8601', '24h')
    .option('--agent <name>', 'only this agent')
    .option('-o, --output <file>', 'write the policy here instead of stdout, and say what was added')
    .action(async (o: SuggestCliOptions) => {
      try {
        await runSuggest(o);
      } catch (err) {
        // A bad --since is bad input (exit 2); an unreadable store or file is a failure (exit 1).
        if (err instanceof PolicyError) {
          process.stderr.write(`agent-egress policy suggest: invalid policy: ${err.message}\n`);
          process.exitCode = 2;
          return;
        }
        if (err instanceof StoreUrlError) {
          process.stderr.write(`agent-egress policy suggest: ${err.message}\n`);
          process.exitCode = 2;
          return;
        }
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
