import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * A throwaway PostgreSQL cluster for one test file: initdb + pg_ctl in a temp dir, run as the
 * `postgres` user (the server refuses to run as root), listening on 127.0.0.1 only, on a free port.
 * Password auth (scram) for the `egress` role; the superuser `postgres` is trusted over the socket
 * only, so tests can edit rows and inspect the server without a password.
 */
export interface PgServer {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  dir: string;
  /** postgres://egress@127.0.0.1:port/db (no password in it). */
  url: string;
  /** The same URL with the password inline (to check it is redacted everywhere). */
  urlWithPassword: string;
  /** Run SQL as the superuser through the Unix socket; returns psql's unaligned output. */
  sql(query: string, db?: string): string;
  stop(): void;
  start(): void;
  drop(): void;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) throw new Error('PostgreSQL server binaries missing: apt-get install postgresql (see .ci/run)');
  const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error('no initdb under /usr/lib/postgresql/*/bin');
  return path.join(root, versions[0], 'bin');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const asPostgres = (bin: string, args: string[], opts: { input?: string } = {}) =>
  spawnSync('setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', bin, ...args], {
    encoding: 'utf8',
    input: opts.input,
    cwd: '/tmp',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });

export async function startPostgres(): Promise<PgServer> {
  const bin = binDir();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'egress-pg-'));
  chmodSync(dir, 0o755);
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  execFileSync('mkdir', ['-p', sock]);
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  chownSync(dir, uid, gid);
  chownSync(sock, uid, gid);
  const init = asPostgres(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync']);
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  writeFileSync(path.join(data, 'postgresql.auto.conf'), `unix_socket_directories = '${sock}'\nlisten_addresses = '127.0.0.1'\nfsync = off\nlog_min_messages = warning\n`);
  const password = `pw-${Math.random().toString(36).slice(2)}-secret`;
  let port = 0;
  const ctl = (action: 'start' | 'stop', extra: string[] = []) =>
    asPostgres(path.join(bin, 'pg_ctl'), ['-D', data, '-l', path.join(dir, 'server.log'), '-w', '-t', '30', action, ...extra]);
  const start = () => {
    const r = ctl('start', ['-o', `-p ${port}`]);
    if (r.status !== 0) throw new Error(`pg_ctl start on ${port} failed: ${r.stderr}${r.stdout}`);
  };
  // The port was free when probed; another process may take it before postgres binds: pick again.
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      start();
      break;
    } catch (err) {
      if (attempt >= 4) throw err;
    }
  }
  const psql = path.join(bin, 'psql');
  const sql = (query: string, db = 'postgres'): string => {
    const r = asPostgres(psql, ['-h', sock, '-p', String(port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', query]);
    if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
    return r.stdout.trim();
  };
  sql(`CREATE ROLE egress LOGIN PASSWORD '${password}'`);
  sql('CREATE DATABASE egress OWNER egress');
  const url = `postgres://egress@127.0.0.1:${port}/egress`;
  return {
    host: '127.0.0.1',
    port,
    user: 'egress',
    password,
    database: 'egress',
    dir,
    url,
    urlWithPassword: `postgres://egress:${password}@127.0.0.1:${port}/egress`,
    sql,
    stop: () => {
      const r = ctl('stop', ['-m', 'fast']);
      if (r.status !== 0) throw new Error(`pg_ctl stop failed: ${r.stderr}`);
    },
    start,
    drop: () => {
      ctl('stop', ['-m', 'immediate']);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A libpq password file (0600) for the server, for PGPASSFILE / --store-password-file tests. */
export function writePassFile(pg: PgServer, dir: string): string {
  const file = path.join(dir, 'pgpass');
  writeFileSync(file, `${pg.host}:${pg.port}:${pg.database}:${pg.user}:${pg.password}\n`, { mode: 0o600 });
  return file;
}
