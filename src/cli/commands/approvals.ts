import { userInfo } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { adminClientFor, AdminClientError } from '../../admin/client.js';
import { grantDurationMs } from '../../approvals/duration.js';
import type { Grant, PendingApproval } from '../../approvals/types.js';
import { displaySafe, safeJson } from '../../decisions/display.js';
import { parseHttpUrl, UsageError } from '../parse.js';

interface ClientOptions {
  url: string;
  token?: string;
  dataDir?: string;
  json?: boolean;
}

const ID = /^[A-Za-z0-9_.:-]{1,128}$/;

function client(o: ClientOptions) {
  return adminClientFor({ url: o.url, token: o.token, dataDir: o.dataDir });
}

function checkId(id: string, command: string): string {
  if (!ID.test(id)) throw new UsageError(`bad id ${JSON.stringify(id)}`, command);
  return id;
}

function forDuration(text: string): string {
  if (grantDurationMs(text) === null) throw new InvalidArgumentError(`expected a duration like 30m, 1h or 7d (at most 365d), got ${JSON.stringify(text)}`);
  return text;
}

function destination(host: string, port: number | null): string {
  return port === null ? `${host} (DNS)` : `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** A plain table; every cell displaySafe (hosts and agents come from whoever sent the request). */
function table(head: string[], rows: string[][]): string {
  const cells = rows.map((r) => r.map(displaySafe));
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ') + '\n';
  return line(head) + cells.map(line).join('');
}

function clientOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'admin API of the running proxy (pending approvals live in its memory)').env('AGENT_EGRESS_ADMIN_URL').argParser(parseHttpUrl).default('http://127.0.0.1:3129'))
    .option('--token <token>', 'admin API bearer token (default: $AGENT_EGRESS_ADMIN_TOKEN, else <data-dir>/admin-token when this user can read it)')
    .addOption(new Option('--data-dir <dir>', 'where serve keeps the admin token').env('AGENT_EGRESS_DATA_DIR').default('./data'));
}

/** A failure the user can act on (refused, unknown id, already decided, proxy down) is one line, exit 1. */
async function guarded(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof AdminClientError || (err as NodeJS.ErrnoException).code === 'ECONNREFUSED') {
      process.stderr.write(`agent-egress: ${displaySafe((err as Error).message || String(err))}\n`);
      process.exitCode = 1;
    } else throw err;
  }
}

function approver(by: string | undefined): string {
  if (by) return by;
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

export function registerApprovals(program: Command): void {
  const cmd = program
    .command('approvals')
    .description('Decide held requests (policy action: ask, on_no_match: ask) and manage grants, through the admin API (docs/approvals.md)');

  clientOptions(cmd.command('list').description('pending approvals: who asks to reach what, how many requests wait, for how long'))
    .option('--json', 'JSON instead of a table')
    .action((o: ClientOptions) =>
      guarded(async () => {
        const r = await client(o).get<{ pending: PendingApproval[] }>('/api/approvals');
        if (o.json) return void process.stdout.write(safeJson(r) + '\n');
        if (r.pending.length === 0) return void process.stdout.write('no pending approvals\n');
        process.stdout.write(
          table(
            ['ID', 'AGENT', 'DESTINATION', 'METHOD', 'WAITING', 'AGE', 'REASON'],
            r.pending.map((p) => [p.id, p.agent ?? '-', destination(p.host, p.port), p.method, String(p.waiting), age(p.createdAt), p.reason]),
          ),
        );
      }),
    );

  clientOptions(
    cmd
      .command('approve')
      .description('let the held requests through; with --scope agent|everyone also grant it for --for DURATION (default 1h) or --always (written to the grants file)')
      .argument('<id>', 'approval id (from approvals list)'),
  )
    .addOption(new Option('--scope <scope>', 'once: the requests waiting now; agent: this agent; everyone: every agent').choices(['once', 'agent', 'everyone']).default('once'))
    .addOption(new Option('--for <duration>', 'a temporary grant this long, e.g. 30m, 1h, 7d').argParser(forDuration).conflicts('always'))
    .option('--always', 'a permanent grant, written to the grants file (revoke with approvals revoke)')
    .option('--by <name>', 'who decided, for the record (default cli:<your user name>)')
    .option('--json', 'print the answer as JSON')
    .action((id: string, o: ClientOptions & { scope: 'once' | 'agent' | 'everyone'; for?: string; always?: boolean; by?: string }) =>
      guarded(async () => {
        checkId(id, 'agent-egress approvals approve');
        if (o.scope === 'once' && (o.for || o.always)) throw new UsageError('--for and --always need --scope agent or everyone', 'agent-egress approvals approve');
        const body = { scope: o.scope, ...(o.for ? { for: o.for } : {}), ...(o.always ? { always: true } : {}), by: approver(o.by) };
        const r = await client(o).postJson<{ ok: boolean; grant?: Grant }>(`/api/approvals/${encodeURIComponent(id)}/approve`, body);
        if (o.json) return void process.stdout.write(safeJson(r) + '\n');
        const g = r.grant;
        const what = g ? `; grant ${g.id} (${g.agent === null ? 'everyone' : `agent ${g.agent}`}, ${g.always ? 'always' : `until ${g.expiresAt}`})` : '';
        process.stdout.write(displaySafe(`approved ${id}${what}`) + '\n');
      }),
    );

  clientOptions(cmd.command('deny').description('refuse the held requests (403 approval_denied)').argument('<id>', 'approval id'))
    .option('--by <name>', 'who decided, for the record (default cli:<your user name>)')
    .action((id: string, o: ClientOptions & { by?: string }) =>
      guarded(async () => {
        checkId(id, 'agent-egress approvals deny');
        await client(o).postJson(`/api/approvals/${encodeURIComponent(id)}/deny`, { by: approver(o.by) });
        process.stdout.write(displaySafe(`denied ${id}`) + '\n');
      }),
    );

  clientOptions(cmd.command('grants').description('grants in force: temporary (in memory, with expiry) and always (the grants file)'))
    .option('--json', 'JSON instead of a table')
    .action((o: ClientOptions) =>
      guarded(async () => {
        const r = await client(o).get<{ grants: Grant[]; lastError?: { message: string } | null }>('/api/grants');
        if (o.json) return void process.stdout.write(safeJson(r) + '\n');
        if (r.lastError) process.stderr.write(displaySafe(`agent-egress: the grants file's last edit was refused: ${r.lastError.message}`) + '\n');
        if (r.grants.length === 0) return void process.stdout.write('no grants\n');
        process.stdout.write(
          table(
            ['ID', 'AGENT', 'DESTINATION', 'EXPIRES', 'BY', 'RULE'],
            r.grants.map((g) => [g.id, g.agent ?? '(everyone)', g.port === null ? g.host : destination(g.host, g.port), g.always ? 'never' : g.expiresAt ?? '-', g.by, g.rule]),
          ),
        );
      }),
    );

  clientOptions(cmd.command('revoke').description('remove a grant (a temporary one, or a rule from the grants file)').argument('<id>', 'grant id (from approvals grants)')).action(
    (id: string, o: ClientOptions) =>
      guarded(async () => {
        checkId(id, 'agent-egress approvals revoke');
        await client(o).postJson(`/api/grants/${encodeURIComponent(id)}/revoke`, {});
        process.stdout.write(displaySafe(`revoked ${id}`) + '\n');
      }),
  );
}
