import { Command, Option } from 'commander';
import { adminClientFor, type AdminClient } from '../../admin/client.js';
import { outcomeOf, weightOf, type DecisionRecord } from '../../decisions/record.js';
import { buildFilter, MAX_LIMIT, QueryError, type RawFilter } from '../../decisions/query.js';
import { openStoreReader, type StoreFlags } from '../../decisions/store/open.js';
import { StoreUrlError } from '../../decisions/store/location.js';
import { StoreUnavailableError, type DecisionStore, type QueryPage } from '../../decisions/store/types.js';
import { renderSummary, type Summary } from '../../decisions/summary.js';
import { displaySafe, safeJson, safeJsonText } from '../../decisions/display.js';
import { parseHttpUrl } from '../parse.js';
import { storeOption, storePasswordFileOption } from '../store-flags.js';

export interface SourceOptions extends StoreFlags {
  dataDir?: string;
  url?: string;
  token?: string;
}

export interface LogOptions extends SourceOptions, Omit<RawFilter, 'limit' | 'cursor'> {
  limit?: string;
  json?: boolean;
  wide?: boolean;
}

/** Where output goes; a returned promise is waited for (backpressure). */
type Out = (s: string) => void | Promise<void>;

/** process.stdout with backpressure; a reader that went away (`| head`) ends the command quietly. */
let pipeWatched = false;
const stdout: Out = (s) => {
  if (!pipeWatched) {
    pipeWatched = true;
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit();
      throw err;
    });
  }
  return new Promise<void>((resolve) => {
    if (process.stdout.write(s)) resolve();
    else process.stdout.once('drain', resolve);
  });
};

/** Reads the store file directly (read-only, works while the proxy writes it) or goes through the admin API. */
interface Source {
  query(raw: RawFilter): Promise<QueryPage>;
  summary(raw: RawFilter): Promise<Summary>;
  close(): Promise<void>;
}

async function openSource(o: SourceOptions): Promise<Source & { store?: DecisionStore; client?: AdminClient }> {
  if (o.url) {
    const client = adminClientFor({ url: o.url, token: o.token, dataDir: o.dataDir });
    return { client, query: (r) => client.query(r), summary: (r) => client.summary(r), close: async () => {} };
  }
  const store = await openStoreReader(o);
  return { store, query: (r) => store.query(buildFilter(r)), summary: (r) => store.summary(buildFilter(r)), close: () => store.close() };
}

function rawFilter(o: LogOptions): RawFilter {
  const { since, until, decision, agent, host, reason, rule, path, method, capture, limit } = o;
  const raw: RawFilter = { since, until, decision, agent, host, reason, rule, path, method, capture, limit };
  // Validate here too, so a bad flag is reported the same way whatever the source.
  buildFilter(raw);
  for (const k of Object.keys(raw) as (keyof RawFilter)[]) if (raw[k] === undefined) delete raw[k];
  return raw;
}

interface Column {
  head: string;
  cell: (r: DecisionRecord) => string;
  /** Longest cell shown before it is cut with an ellipsis (without --wide); 0 = never cut. */
  max: number;
}

// RULE comes last and is never cut: it is what an operator edits the policy by, and a cut name is a
// different name. Every other column has a fixed width, so a streamed table (`log tail`, `--limit 0`)
// lines up with its header.
const COLUMNS: Column[] = [
  { head: 'TIME', cell: (r) => r.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), max: 20 },
  { head: 'DECISION', cell: (r) => outcomeOf(r), max: 8 },
  { head: 'AGENT', cell: (r) => r.agent ?? '-', max: 16 },
  { head: 'METHOD', cell: (r) => r.method, max: 7 },
  { head: 'DESTINATION', cell: (r) => (r.port === null ? r.host : `${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}`), max: 40 },
  // A folded record (repeated identical denials) shows how many it stands for: "no_rule x523".
  { head: 'REASON', cell: (r) => (weightOf(r) > 1 ? `${r.reason} x${weightOf(r)}` : r.reason), max: 26 },
  { head: 'ID', cell: (r) => r.id, max: 18 },
  { head: 'RULE', cell: (r) => r.rule ?? '-', max: 0 },
];

export interface TableOptions {
  /** Never cut a cell (columns may then not line up in a streamed table). */
  wide?: boolean;
}

/**
 * Fixed-width table rows. Every cell is displaySafe: a recorded control character shows as an escape,
 * it never reaches the terminal. Widths are fixed up front (the columns' maxima, or, for a page known in
 * advance, its longest cells), so rows printed one at a time line up with the header.
 */
export class TableFormat {
  private readonly widths: number[];
  private report = false;
  private failure = false;

  constructor(
    private readonly opts: TableOptions = {},
    fitTo?: DecisionRecord[],
  ) {
    this.widths = COLUMNS.map((c, i) => {
      if (!fitTo) return Math.max(c.head.length, c.max);
      const longest = Math.max(c.head.length, ...fitTo.map((r) => this.cells(r)[i].length));
      return c.max && !opts.wide ? Math.min(longest, Math.max(c.head.length, c.max)) : longest;
    });
  }

  private cells(r: DecisionRecord): string[] {
    return COLUMNS.map((c) => {
      const v = displaySafe(c.cell(r));
      return c.max && !this.opts.wide && v.length > c.max ? `${v.slice(0, c.max - 1)}…` : v;
    });
  }

  private line(cells: string[]): string {
    return cells.map((v, i) => v.padEnd(this.widths[i])).join('  ').trimEnd() + '\n';
  }

  header(): string {
    return this.line(COLUMNS.map((c) => c.head));
  }

  row(r: DecisionRecord): string {
    const o = outcomeOf(r);
    if (o === 'deny*') this.report = true;
    if (o === 'error') this.failure = true;
    return this.line(this.cells(r));
  }

  /** What the markers in the rows printed so far mean. */
  legend(): string {
    const out: string[] = [];
    if (this.report) out.push('deny* = report mode: would have been denied, was forwarded');
    if (this.failure) out.push('error = the policy allowed it, then DNS or the upstream failed (REASON); not a denial');
    return out.length ? `\n${out.join('\n')}\n` : '';
  }
}

/** A whole page as a table, its columns fitted to the page. */
export function renderTable(records: DecisionRecord[], opts: TableOptions = {}): string {
  const t = new TableFormat(opts, records);
  return t.header() + records.map((r) => t.row(r)).join('') + t.legend();
}

/**
 * Output in chunks, waiting for the writer when it asks to (a pipe whose reader is slow), so memory stays
 * bounded however many rows are written.
 */
class ChunkedOut {
  private buf = '';
  constructor(private readonly out: Out) {}
  async write(s: string): Promise<void> {
    this.buf += s;
    if (this.buf.length >= 64 * 1024) await this.flush();
  }
  async flush(): Promise<void> {
    if (!this.buf) return;
    const b = this.buf;
    this.buf = '';
    await this.out(b);
  }
}

/** `log query`: a page (default 50) as a table or JSON lines; `--limit 0` streams every match. */
export async function runQuery(o: LogOptions, out: Out = stdout): Promise<void> {
  const limit = parseCliLimit(o.limit ?? '50');
  const raw = rawFilter({ ...o, limit: undefined });
  const w = new ChunkedOut(out);
  const table = o.json ? null : new TableFormat({ wide: o.wide });
  let n = 0;
  const emit = async (r: DecisionRecord | string): Promise<void> => {
    n++;
    if (typeof r === 'string') await w.write(`${safeJsonText(r)}\n`);
    else await w.write(table ? table.row(r) : `${safeJson(r)}\n`);
  };
  if (table) await w.write(table.header());
  if (o.url) {
    // The API caps a page; follow its cursor until the limit (or the end) is reached.
    const client = adminClientFor({ url: o.url, token: o.token, dataDir: o.dataDir });
    let cursor: string | undefined;
    do {
      const want = limit === 0 ? MAX_LIMIT : Math.min(MAX_LIMIT, limit - n);
      const page = await client.query({ ...raw, limit: String(want), ...(cursor ? { cursor } : {}) });
      for (const r of page.records) await emit(r);
      cursor = page.nextCursor ?? undefined;
    } while (cursor && (limit === 0 || n < limit));
  } else {
    const store = await openStoreReader(o);
    try {
      for await (const json of store.iterateJson(buildFilter(raw), limit)) {
        if (table) await emit(JSON.parse(json) as DecisionRecord);
        else await emit(json);
      }
    } finally {
      await store.close();
    }
  }
  if (n === 0 && table) await w.write('no decisions match\n');
  else if (table) await w.write(table.legend());
  await w.flush();
}

/** --limit for the CLI: 0 (all) or a positive integer; the admin API keeps its own cap per page. */
function parseCliLimit(text: string): number {
  if (!/^\d{1,12}$/.test(text)) throw new QueryError('limit', 'expected 0 (no limit) or a positive integer');
  return Number(text);
}

export async function runSummary(o: LogOptions, out: Out = stdout): Promise<void> {
  const raw = rawFilter({ ...o, since: o.since ?? '24h', limit: undefined });
  const src = await openSource(o);
  try {
    const s = await src.summary(raw);
    out(o.json ? `${safeJson(s)}\n` : renderSummary(s));
  } finally {
    await src.close();
  }
}

/** Follow new decisions until `signal` aborts: polls the file, or the SSE stream with --url. */
export async function runTail(o: LogOptions, signal: AbortSignal, out: Out = stdout, pollMs = 500): Promise<void> {
  const raw = rawFilter({ ...o, limit: undefined });
  const table = o.json ? null : new TableFormat({ wide: o.wide });
  const print = (r: DecisionRecord) => void out(table ? table.row(r) : `${safeJson(r)}\n`);
  if (table) await out(table.header());
  if (o.url) {
    await adminClientFor({ url: o.url, token: o.token, dataDir: o.dataDir }).stream(raw, print, signal);
    return;
  }
  const store = await openStoreReader(o);
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

export async function runVerify(o: StoreFlags & { since?: string; json?: boolean }, out: Out = stdout): Promise<boolean> {
  const f = buildFilter({ since: o.since });
  const store = await openStoreReader(o);
  try {
    const v = await store.verify({ sinceMs: f.sinceMs });
    if (o.json) out(`${JSON.stringify(v)}\n`);
    else if (v.replicas) {
      // A fleet store: one chain per replica, each reported.
      const lines = v.replicas.map((r) =>
        r.ok
          ? `  ${displaySafe(r.replica)}: ok, ${r.checked} records (seq ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'}), head hash ${r.headHash}`
          : `  ${displaySafe(r.replica)}: FAILED: ${displaySafe(r.message)} (${r.checked} records verified before it)`,
      );
      out(`${v.ok ? 'ok' : 'FAILED'}: ${v.checked} records verified in ${v.replicas.length} replica chain(s)\n${lines.join('\n')}${lines.length ? '\n' : ''}`);
    } else if (v.ok) out(`ok: ${v.checked} records verified (seq ${v.firstSeq ?? '-'}..${v.lastSeq ?? '-'}), head hash ${v.headHash}\n`);
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
    .addOption(new Option('--data-dir <dir>', 'directory of the decision store (read directly, read-only); with --url, where serve keeps the admin token').env('AGENT_EGRESS_DATA_DIR').default('./data'))
    .addOption(storeOption())
    .addOption(storePasswordFileOption())
    .option('--url <url>', 'read through the admin API instead, e.g. http://127.0.0.1:3129', parseHttpUrl)
    .option('--token <token>', 'admin API bearer token (default: $AGENT_EGRESS_ADMIN_TOKEN, else <data-dir>/admin-token when this user can read it)');
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
    .option('--path <glob>', 'only requests whose recorded path matches this glob (* any characters, / included; ?)')
    .option('--method <name>', 'only this method as recorded (GET, CONNECT, SOCKS5, DNS, ...)')
    .addOption(new Option('--capture <how>', 'only connections captured this way (transparent: redirected by the companion firewall)').choices(['transparent']));
  if (withLimit) cmd.option('--limit <n>', 'at most this many records; 0 = all of them (streamed, constant memory)', '50');
  return cmd.option('--json', 'JSON lines instead of a table').option('--wide', 'never cut a table cell');
}

/** Errors a user can fix are one line and exit 1; anything else is a bug and propagates. */
async function guarded(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof QueryError) {
      process.stderr.write(`agent-egress: --${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof StoreUrlError) {
      process.stderr.write(`agent-egress: ${err.message}\n`);
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
    .addOption(storeOption())
    .addOption(storePasswordFileOption())
    .option('--since <when>', 'start at the first record from this time (trusts the record before it)')
    .option('--json', 'print the result as JSON')
    .action((o: StoreFlags & { since?: string; json?: boolean }) =>
      guarded(async () => {
        if (!(await runVerify(o))) process.exitCode = 1;
      }),
    );
}
