import { Command, Option } from 'commander';
import { AdminClient } from '../../admin/client.js';
import type { DecisionRecord } from '../../decisions/record.js';
import { buildFilter, QueryError, type RawFilter } from '../../decisions/query.js';
import { openSqliteStoreReadOnly, type SqliteDecisionStore } from '../../decisions/store/sqlite.js';
import { StoreUnavailableError, type QueryPage } from '../../decisions/store/types.js';
import { renderSummary, type Summary } from '../../decisions/summary.js';

export interface SourceOptions {
  dataDir?: string;
  url?: string;
  token?: string;
}

export interface LogOptions extends SourceOptions, Omit<RawFilter, 'limit' | 'cursor'> {
  limit?: string;
  json?: boolean;
}

type Out = (s: string) => void;
const stdout: Out = (s) => void process.stdout.write(s);

/** Reads the store file directly (read-only, works while the proxy writes it) or goes through the admin API. */
interface Source {
  query(raw: RawFilter): Promise<QueryPage>;
  summary(raw: RawFilter): Promise<Summary>;
  close(): Promise<void>;
}

function openSource(o: SourceOptions): Source & { store?: SqliteDecisionStore; client?: AdminClient } {
  if (o.url) {
    const client = new AdminClient(o.url, o.token ?? process.env.AGENT_EGRESS_ADMIN_TOKEN);
    return { client, query: (r) => client.query(r), summary: (r) => client.summary(r), close: async () => {} };
  }
  const store = openSqliteStoreReadOnly({ dataDir: o.dataDir ?? './data' });
  return { store, query: (r) => store.query(buildFilter(r)), summary: (r) => store.summary(buildFilter(r)), close: () => store.close() };
}

function rawFilter(o: LogOptions): RawFilter {
  const { since, until, decision, agent, host, reason, rule, path, limit } = o;
  const raw: RawFilter = { since, until, decision, agent, host, reason, rule, path, limit };
  // Validate here too, so a bad flag is reported the same way whatever the source.
  buildFilter(raw);
  for (const k of Object.keys(raw) as (keyof RawFilter)[]) if (raw[k] === undefined) delete raw[k];
  return raw;
}

const COLUMNS: [string, (r: DecisionRecord) => string, number][] = [
  ['TIME', (r) => r.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), 20],
  ['DECISION', (r) => (r.mode === 'report' && r.verdict === 'deny' ? 'deny*' : r.verdict), 8],
  ['AGENT', (r) => r.agent ?? '-', 16],
  ['METHOD', (r) => r.method, 7],
  ['DESTINATION', (r) => (r.port === null ? r.host : `${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}`), 40],
  ['REASON', (r) => r.reason, 19],
  ['RULE', (r) => r.rule ?? '-', 16],
  ['ID', (r) => r.id, 20],
];

/** A readable fixed-width table; long cells are cut with an ellipsis so columns stay aligned. */
export function renderTable(records: DecisionRecord[]): string {
  const cells = records.map((r) => COLUMNS.map(([, f, max]) => {
    const v = f(r);
    return v.length > max ? `${v.slice(0, max - 1)}…` : v;
  }));
  const widths = COLUMNS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  const out = [line(COLUMNS.map(([h]) => h)), ...cells.map(line)];
  if (records.some((r) => r.mode === 'report' && r.verdict === 'deny')) out.push('', 'deny* = report mode: would have been denied, was forwarded');
  return out.join('\n') + '\n';
}

export async function runQuery(o: LogOptions, out: Out = stdout): Promise<void> {
  const raw = rawFilter({ ...o, limit: o.limit ?? '50' });
  const src = openSource(o);
  try {
    const page = await src.query(raw);
    if (o.json) for (const r of page.records) out(`${JSON.stringify(r)}\n`);
    else if (page.records.length === 0) out('no decisions match\n');
    else out(renderTable(page.records));
  } finally {
    await src.close();
  }
}

export async function runSummary(o: LogOptions, out: Out = stdout): Promise<void> {
  const raw = rawFilter({ ...o, since: o.since ?? '24h', limit: undefined });
  const src = openSource(o);
  try {
    const s = await src.summary(raw);
    out(o.json ? `${JSON.stringify(s)}\n` : renderSummary(s));
  } finally {
    await src.close();
  }
}

/** Follow new decisions until `signal` aborts: polls the file, or the SSE stream with --url. */
export async function runTail(o: LogOptions, signal: AbortSignal, out: Out = stdout, pollMs = 500): Promise<void> {
  const raw = rawFilter({ ...o, limit: undefined });
  const print = (r: DecisionRecord) => out(o.json ? `${JSON.stringify(r)}\n` : renderTable([r]).split('\n')[1] + '\n');
  if (!o.json) out(renderTable([]));
  if (o.url) {
    await new AdminClient(o.url, o.token ?? process.env.AGENT_EGRESS_ADMIN_TOKEN).stream(raw, print, signal);
    return;
  }
  const store = openSqliteStoreReadOnly({ dataDir: o.dataDir ?? './data' });
  const filter = buildFilter(raw);
  try {
    let cursor = (await store.tailAfter(null)).cursor;
    while (!signal.aborted) {
      const page = await store.tailAfter(cursor, filter, 500);
      cursor = page.cursor;
      page.records.forEach(print);
      if (page.records.length < 500) await sleep(pollMs, signal);
    }
  } finally {
    await store.close();
  }
}

export async function runVerify(o: { dataDir?: string; since?: string; json?: boolean }, out: Out = stdout): Promise<boolean> {
  const f = buildFilter({ since: o.since });
  const store = openSqliteStoreReadOnly({ dataDir: o.dataDir ?? './data' });
  try {
    const v = await store.verify({ sinceMs: f.sinceMs });
    if (o.json) out(`${JSON.stringify(v)}\n`);
    else if (v.ok) out(`ok: ${v.checked} records verified (seq ${v.firstSeq ?? '-'}..${v.lastSeq ?? '-'}), head hash ${v.headHash}\n`);
    else out(`FAILED: ${v.message}\n  ${v.checked} records verified before it\n`);
    return v.ok;
  } finally {
    await store.close();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function sourceOptions(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'directory of the decision store (read directly, read-only)', './data')
    .option('--url <url>', 'read through the admin API instead, e.g. http://127.0.0.1:3129')
    .option('--token <token>', 'admin API bearer token (default: $AGENT_EGRESS_ADMIN_TOKEN)');
}

function filterOptions(cmd: Command, withLimit: boolean): Command {
  cmd
    .option('--since <when>', 'from this time: a duration back (10m, 1h, 30d) or ISO-8601')
    .option('--until <when>', 'before this time: a duration back or ISO-8601')
    .addOption(new Option('--decision <verdict>', 'only allow or deny').choices(['allow', 'deny']))
    .option('--agent <name>', 'only this agent')
    .option('--host <glob>', 'only hosts matching this glob (* and ?)')
    .option('--reason <code>', 'only this reason code (see docs/decision-log.md)')
    .option('--rule <name>', 'only decisions made by this rule')
    .option('--path <glob>', 'only requests whose recorded path matches this glob (* any characters, / included; ?)');
  if (withLimit) cmd.option('--limit <n>', 'at most this many records (1-1000)', '50');
  return cmd.option('--json', 'JSON lines instead of a table');
}

/** Errors a user can fix are one line and exit 1; anything else is a bug and propagates. */
async function guarded(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof QueryError) {
      process.stderr.write(`agent-egress: --${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof StoreUnavailableError || (err as Error).name === 'AdminClientError' || (err as Error).name === 'CursorError') {
      process.stderr.write(`agent-egress: ${(err as Error).message}\n`);
      process.exitCode = 1;
    } else throw err;
  }
}

export function registerLog(program: Command): void {
  const log = program.command('log').description('Query the decision log: what did my agent try to reach, and why was it blocked?');
  filterOptions(sourceOptions(log.command('query').description('list decisions, newest first')), true).action((o: LogOptions) => guarded(() => runQuery(o)));
  filterOptions(sourceOptions(log.command('summary').description('totals, top denied hosts, top agents, denies per reason and over time')), false)
    .action((o: LogOptions) => guarded(() => runSummary({ ...o, since: o.since ?? '24h' })));
  filterOptions(sourceOptions(log.command('tail').description('follow new decisions as they are stored (Ctrl-C to stop)')), false).action((o: LogOptions) =>
    guarded(async () => {
      const ac = new AbortController();
      const stop = () => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        await runTail(o, ac.signal);
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    }),
  );
  log
    .command('verify')
    .description('check the hash chain; exit 1 at the first altered, removed or inserted record')
    .option('--data-dir <dir>', 'directory of the decision store', './data')
    .option('--since <when>', 'start at the first record from this time (trusts the record before it)')
    .option('--json', 'print the result as JSON')
    .action((o: { dataDir?: string; since?: string; json?: boolean }) =>
      guarded(async () => {
        if (!(await runVerify(o))) process.exitCode = 1;
      }),
    );
}
