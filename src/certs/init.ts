import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalIp } from '../net/ip.js';
import { runTool } from '../process/run-tool.js';

export class CertsError extends Error {
  override name = 'CertsError';
}

export interface CertsInitOptions {
  dir: string;
  /** Names and addresses the server certificate is valid for. */
  serverNames: string[];
  /** One client certificate per agent; the certificate's CN (and URI SAN) carries the agent name. */
  agents: string[];
  days: number;
  /** Replace an existing CA and server certificate instead of reusing them. */
  force: boolean;
}

export interface CertsInitResult {
  created: string[];
  reused: string[];
}

export const DEFAULT_SERVER_NAMES = ['localhost', '127.0.0.1', 'egress'];
const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

/** The URI SAN an agent's client certificate carries, so a proxy can map it without parsing the subject. */
export function agentUri(agent: string): string {
  return `urn:agent-egress:agent:${agent}`;
}

function sanList(names: string[]): string {
  return names
    .map((n) => {
      const ip = canonicalIp(n);
      if (ip) return `IP:${ip.address}`;
      if (!DNS_NAME.test(n)) throw new CertsError(`${JSON.stringify(n)} is neither an IP address nor a DNS name`);
      return `DNS:${n.toLowerCase()}`;
    })
    .join(',');
}

const openssl = (args: string[]) => runTool('openssl', args, '', 30_000);

async function newKey(path: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
  await chmod(path, 0o600);
}

async function issue(tmp: string, ca: { crt: string; key: string }, key: string, subject: string, ext: string, days: number, out: string): Promise<void> {
  const csr = join(tmp, `${randomBytes(6).toString('hex')}.csr`);
  const extFile = join(tmp, `${randomBytes(6).toString('hex')}.ext`);
  await writeFile(extFile, ext);
  await openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr]);
  await openssl([
    'x509', '-req', '-in', csr, '-CA', ca.crt, '-CAkey', ca.key, '-set_serial', `0x${randomBytes(16).toString('hex').replace(/^[89a-f]/, '7')}`,
    '-days', String(days), '-sha256', '-extfile', extFile, '-out', out,
  ]);
}

/**
 * Write a local CA, a server certificate and per-agent client certificates into `dir`. An existing CA
 * is reused (so new agents can be added later) unless `force`; existing agent certificates are kept.
 */
export async function initCerts(o: CertsInitOptions): Promise<CertsInitResult> {
  for (const a of o.agents) if (!AGENT_NAME.test(a)) throw new CertsError(`agent name ${JSON.stringify(a)}: letters, digits, _ . - (max 63)`);
  if (!Number.isInteger(o.days) || o.days < 1 || o.days > 3650) throw new CertsError('--days must be 1-3650');
  const san = sanList(o.serverNames.length > 0 ? o.serverNames : DEFAULT_SERVER_NAMES);
  const res: CertsInitResult = { created: [], reused: [] };
  const ca = { crt: join(o.dir, 'ca.crt'), key: join(o.dir, 'ca.key') };
  const server = { crt: join(o.dir, 'server.crt'), key: join(o.dir, 'server.key') };
  await mkdir(join(o.dir, 'agents'), { recursive: true });
  const tmp = await mkdtemp(join(tmpdir(), 'agent-egress-certs-'));
  try {
    const freshCa = o.force || !existsSync(ca.crt) || !existsSync(ca.key);
    if (freshCa) {
      await newKey(ca.key);
      await openssl([
        'req', '-x509', '-new', '-key', ca.key, '-subj', '/CN=agent-egress local CA', '-days', String(o.days), '-sha256',
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', ca.crt,
      ]);
      res.created.push(ca.crt, ca.key);
    } else res.reused.push(ca.crt, ca.key);

    // A new CA invalidates every certificate it did not sign: reissue them all.
    if (freshCa || !existsSync(server.crt) || !existsSync(server.key)) {
      await newKey(server.key);
      await issue(tmp, ca, server.key, '/CN=agent-egress', [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        `subjectAltName=${san}`,
        '',
      ].join('\n'), o.days, server.crt);
      res.created.push(server.crt, server.key);
    } else res.reused.push(server.crt, server.key);

    for (const agent of o.agents) {
      const crt = join(o.dir, 'agents', `${agent}.crt`);
      const key = join(o.dir, 'agents', `${agent}.key`);
      if (!freshCa && existsSync(crt) && existsSync(key)) {
        res.reused.push(crt, key);
        continue;
      }
      await newKey(key);
      await issue(tmp, ca, key, `/CN=${agent}`, [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=clientAuth',
        `subjectAltName=URI:${agentUri(agent)}`,
        '',
      ].join('\n'), o.days, crt);
      res.created.push(crt, key);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return res;
}
