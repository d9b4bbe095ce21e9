import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const yaml = (requireAuth: boolean) => `version: 1
require_auth: ${requireAuth}
agents:
  - name: ci-bot
    token_sha256: "${sha('ci-secret').toUpperCase()}"
  - name: env-bot
    token_env: ENV_BOT_TOKEN
  - name: unset-bot
    token_env: NOT_SET_ANYWHERE
  - name: office
    sources: [10.1.0.0/16, "fd00:1::/32"]
  - name: office-inner
    sources: [10.1.2.0/24]
  - name: tls-bot
    cert_names: [tls-bot.internal, tls-bot]
`;

describe('identify', () => {
  const p = compilePolicy(parsePolicyText(yaml(false), 'id.yaml'), { ENV_BOT_TOKEN: 'env-secret' });
  const auth = (username: string | undefined, password: string | undefined, sourceAddress = '192.0.2.1') =>
    p.identify({ authPresent: true, username, password, sourceAddress });

  it('token_sha256: the right password identifies the agent', () => {
    expect(auth('ci-bot', 'ci-secret')).toEqual({ ok: true, agent: 'ci-bot' });
  });

  it('token_env: compared against the value captured at compile time', () => {
    expect(auth('env-bot', 'env-secret')).toEqual({ ok: true, agent: 'env-bot' });
    process.env.ENV_BOT_TOKEN = 'changed-later';
    try {
      expect(auth('env-bot', 'changed-later').ok).toBe(false);
    } finally {
      delete process.env.ENV_BOT_TOKEN;
    }
  });

  it('an unset token_env never matches (not even an empty password) and warns', () => {
    expect(auth('unset-bot', '')).toMatchObject({ ok: false, reason: 'auth_required' });
    expect(auth('unset-bot', 'anything')).toMatchObject({ ok: false, reason: 'auth_required' });
    expect(p.warnings.some((w) => w.includes('NOT_SET_ANYWHERE'))).toBe(true);
  });

  it.each([
    ['wrong password', 'ci-bot', 'nope'],
    ['unknown user', 'ghost', 'ci-secret'],
    ['another agent\'s password', 'env-bot', 'ci-secret'],
    ['agent without a token', 'office', ''],
    ['no username', undefined, 'ci-secret'],
    ['no password', 'ci-bot', undefined],
  ] as const)('bad credentials (%s) are refused without echoing them, even from a known source', (_l, user, pass) => {
    const r = auth(user, pass, '10.1.2.3');
    expect(r).toEqual({ ok: false, reason: 'auth_required', message: 'invalid proxy credentials' });
  });

  it('client certificate names identify an agent', () => {
    expect(p.identify({ authPresent: false, sourceAddress: '192.0.2.1', certNames: ['other', 'tls-bot'] })).toEqual({ ok: true, agent: 'tls-bot' });
    expect(p.identify({ authPresent: false, sourceAddress: '192.0.2.1', certNames: ['TLS-BOT'] })).toEqual({ ok: true, agent: null });
  });

  it('sources: first agent by file order; IPv4-mapped client addresses count as IPv4', () => {
    const src = (a: string) => p.identify({ authPresent: false, sourceAddress: a });
    expect(src('10.1.2.3')).toEqual({ ok: true, agent: 'office' });
    expect(src('10.1.9.9')).toEqual({ ok: true, agent: 'office' });
    expect(src('::ffff:10.1.2.3')).toEqual({ ok: true, agent: 'office' });
    expect(src('fd00:1::5')).toEqual({ ok: true, agent: 'office' });
    expect(src('10.2.0.1')).toEqual({ ok: true, agent: null });
  });

  it('require_auth: anonymous clients are refused, identified ones are not', () => {
    const q = compilePolicy(parsePolicyText(yaml(true), 'id.yaml'), {});
    expect(q.identify({ authPresent: false, sourceAddress: '192.0.2.1' })).toEqual({
      ok: false,
      reason: 'auth_required',
      message: 'proxy credentials required',
    });
    expect(q.identify({ authPresent: false, sourceAddress: '10.1.0.1' })).toEqual({ ok: true, agent: 'office' });
    expect(q.identify({ authPresent: true, username: 'ci-bot', password: 'ci-secret', sourceAddress: '192.0.2.1' })).toEqual({ ok: true, agent: 'ci-bot' });
  });
});
