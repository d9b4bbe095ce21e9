import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApprovalBroker } from '../../src/approvals/broker.js';
import { GrantStore } from '../../src/approvals/grant-store.js';
import { ApprovalError, type ApprovalEvent } from '../../src/approvals/types.js';

const req = (host: string, agent: string | null = 'bot', port: number | null = 443) => ({ agent, host, port, method: 'CONNECT', rule: null });

function broker(o: Partial<ConstructorParameters<typeof ApprovalBroker>[0]> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ae-broker-'));
  const grants = new GrantStore({ file: join(dir, 'grants.yaml') });
  const events: [ApprovalEvent, boolean][] = [];
  const b = new ApprovalBroker({ grants, onEvent: (e, n) => events.push([e, n]), ...o });
  return { b, grants, events, dir };
}

async function status(fn: () => unknown): Promise<number | null> {
  try {
    await fn();
    return null;
  } catch (e) {
    return e instanceof ApprovalError ? e.status : -1;
  }
}

describe('ApprovalBroker', () => {
  it('shares one approval per (agent, host, port), counts its waiters, and notifies only a new one as new', async () => {
    const { b, events } = broker();
    const h1 = b.hold(req('a.example'));
    const h2 = b.hold(req('a.example'));
    const h3 = b.hold(req('a.example', 'bot', 80));
    const list = b.list();
    expect(list).toHaveLength(2);
    expect(list.find((x) => x.port === 443)?.waiting).toBe(2);
    expect(events.filter(([, n]) => n)).toHaveLength(2);
    expect(events.filter(([e, n]) => e.type === 'pending' && !n)).toHaveLength(1);
    const id = list.find((x) => x.port === 443)!.id;
    await b.approve(id, { scope: 'once', by: 'x' });
    expect(await h1).toMatchObject({ kind: 'approved', by: 'x', scope: 'once', grant: null });
    expect(await h2).toMatchObject({ kind: 'approved' });
    b.deny(list.find((x) => x.port === 80)!.id, 'y');
    expect(await h3).toMatchObject({ kind: 'denied', by: 'y' });
    expect(events.at(-1)![0]).toMatchObject({ type: 'resolved', approval: { outcome: 'denied', by: 'y' } });
  });

  it('404 for an unknown id, 409 for a decided one, 400 for scopes that do not fit', async () => {
    const { b } = broker();
    const h = b.hold(req('b.example', null));
    const id = b.list()[0].id;
    expect(await status(() => b.approve('ap_unknown', { scope: 'once' }))).toBe(404);
    expect(await status(() => b.approve(id, { scope: 'agent', forMs: 1000 }))).toBe(400);
    expect(await status(() => b.approve(id, { scope: 'once', always: true }))).toBe(400);
    expect(await status(() => b.approve(id, { scope: 'everyone', always: true, forMs: 1000 }))).toBe(400);
    b.deny(id);
    expect(await h).toMatchObject({ kind: 'denied', by: 'admin' });
    expect(await status(() => b.approve(id, { scope: 'once' }))).toBe(409);
    expect(await status(() => b.deny(id))).toBe(409);
  });

  it('bounds: per agent and in total, a new approval beyond is refused at once; joining is not new', async () => {
    const { b } = broker({ maxPerAgent: 1, maxTotal: 2 });
    const a = b.hold(req('one.example', 'a'));
    expect(await b.hold(req('two.example', 'a'))).toEqual({ kind: 'overflow', limit: 'agent' });
    const joined = b.hold(req('one.example', 'a'));
    const c = b.hold(req('one.example', 'c'));
    expect(await b.hold(req('one.example', 'd'))).toEqual({ kind: 'overflow', limit: 'total' });
    b.close();
    for (const h of [a, joined, c]) expect(await h).toMatchObject({ kind: 'denied', by: 'shutdown' });
    expect(await b.hold(req('x.example'))).toMatchObject({ kind: 'overflow' });
  });

  it('each waiter times out on its own; an aborted one leaves, and the last one out ends the approval', async () => {
    const { b, events } = broker({ timeoutMs: 100 });
    const ac = new AbortController();
    const gone = b.hold(req('c.example'), { signal: ac.signal });
    const waits = b.hold(req('c.example'));
    ac.abort();
    expect(await gone).toMatchObject({ kind: 'abandoned' });
    expect(b.list()[0].waiting).toBe(1);
    expect(await waits).toMatchObject({ kind: 'timeout' });
    expect(b.list()).toEqual([]);
    expect(events.at(-1)![0]).toMatchObject({ type: 'resolved', approval: { outcome: 'timeout' } });
  });

  it('agent/everyone approvals create grants: temporary in memory, always in the grants file (0600)', async () => {
    const { b, grants, dir } = broker();
    const h = b.hold(req('d.example'));
    const r = await b.approve(b.list()[0].id, { scope: 'agent', by: 'z' });
    expect(r.grant).toMatchObject({ agent: 'bot', host: 'd.example', port: 443, always: false, by: 'z' });
    // No duration given: an hour.
    expect(Date.parse(r.grant!.expiresAt!) - Date.parse(r.grant!.createdAt)).toBe(3_600_000);
    expect((await h).kind).toBe('approved');
    const h2 = b.hold(req('e.example', 'bot', null));
    const r2 = await b.approve(b.list()[0].id, { scope: 'everyone', always: true });
    expect(r2.grant).toMatchObject({ agent: null, port: null, always: true, expiresAt: null });
    expect((await h2).kind).toBe('approved');
    expect(statSync(join(dir, 'grants.yaml')).mode & 0o777).toBe(0o600);
    expect(grants.list().map((g) => g.id).sort()).toEqual([r.grant!.id, r2.grant!.id].sort());
    const reread = new GrantStore({ file: join(dir, 'grants.yaml') });
    reread.load();
    expect(reread.list()).toEqual([expect.objectContaining({ id: r2.grant!.id, agent: null, by: 'admin', approval: expect.stringMatching(/^ap_/) })]);
    grants.close();
  });
});
