import type { IpFamily } from '../net/ip.js';
import { runTool, ToolExecError } from '../process/run-tool.js';
import {
  CHAIN,
  LOG_CHAIN,
  parseIptablesNatSave,
  parseIptablesSave,
  renderIptables,
  renderIptablesRemoval,
  restoreNatSection,
  type IptablesNatState,
  type IptablesState,
  type SavedRedirect,
} from './iptables.js';
import { NFT_COUNTERS, NFT_FAMILY, NFT_NAT_CHAIN, NFT_NAT_HOOK, NFT_TABLE, renderNftables, renderNftablesRemoval } from './nftables.js';
import type { FirewallOptions } from './options.js';

/** `auto` uses whatever `iptables` points at; `nft`/`legacy` pick the variant explicitly. */
export type IptablesBackend = 'auto' | 'nft' | 'legacy';

export interface RefusedCounters {
  packets: number;
  bytes: number;
}

export interface FamilyStatus {
  family: IpFamily;
  /** Our chain exists, is jumped to from OUTPUT, ends in the refusing rule and confines loopback. */
  inPlace: boolean;
  /**
   * No rule of ours lets everything through lo: the agent reaches on this host's own addresses only
   * what the rules name. False for rule sets applied by versions that allowed all of loopback.
   */
  loopbackConfined: boolean;
  refused: RefusedCounters;
  /** The transparent-capture and DNS redirects in force for this family (hooked, not just present). */
  redirects: SavedRedirect[];
}

export interface FirewallStatus {
  tool: 'iptables' | 'nftables';
  /** True only when every family is confined. */
  inPlace: boolean;
  families: FamilyStatus[];
  refused: RefusedCounters;
}

const FAMILIES: IpFamily[] = [4, 6];

function iptBin(family: IpFamily, backend: IptablesBackend, op: 'save' | 'restore'): string {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  return backend === 'auto' ? `${base}-${op}` : `${base}-${backend}-${op}`;
}

async function readIptables(family: IpFamily, backend: IptablesBackend): Promise<IptablesState> {
  const { stdout } = await runTool(iptBin(family, backend, 'save'), ['-c', '-t', 'filter']);
  return parseIptablesSave(stdout);
}

const NO_NAT: IptablesNatState = { chain: false, jumps: [], savedRules: [], redirects: [] };

/**
 * Our part of the nat table. A kernel without the nat table holds no rules of ours there: that reads as
 * none, and a rule set that needs nat then fails to load with the tool's own message.
 */
async function readIptablesNat(family: IpFamily, backend: IptablesBackend): Promise<IptablesNatState> {
  try {
    return parseIptablesNatSave((await runTool(iptBin(family, backend, 'save'), ['-t', 'nat'])).stdout);
  } catch (err) {
    if (err instanceof ToolExecError) return NO_NAT;
    throw err;
  }
}

/** Put back what a previous state had of ours (or nothing, when it had nothing), nat table included. */
function restoreText(prev: IptablesState, current: IptablesState, prevNat: IptablesNatState, currentNat: IptablesNatState): string {
  const nat = restoreNatSection(prevNat, currentNat);
  if (!prev.mainChain && !prev.logChain) {
    return renderIptablesRemoval(current.jumps, { main: current.mainChain, log: current.logChain }) + (nat.length > 0 ? nat.join('\n') + '\n' : '');
  }
  return [
    '*filter',
    `:${CHAIN} - [0:0]`,
    `:${LOG_CHAIN} - [0:0]`,
    ...current.jumps.map((j) => `-D OUTPUT ${j}`),
    ...prev.savedRules,
    ...prev.jumps.map((j) => `-I OUTPUT 1 ${j}`),
    'COMMIT',
    ...nat,
    '',
  ].join('\n');
}

/**
 * Apply iptables rule texts (one per family, as renderIptables makes them) so that either both
 * families end up with the new rules or neither changes: both are test-loaded first, then committed;
 * should the second commit still fail, the first family is put back as it was.
 */
export async function applyIptablesTexts(texts: Record<IpFamily, string>, backend: IptablesBackend = 'auto'): Promise<void> {
  const prev = { 4: await readIptables(4, backend), 6: await readIptables(6, backend) } as Record<IpFamily, IptablesState>;
  const prevNat = await readIptablesNat(4, backend);
  for (const f of FAMILIES) await runTool(iptBin(f, backend, 'restore'), ['--noflush', '--test'], texts[f]);
  await runTool(iptBin(4, backend, 'restore'), ['--noflush'], texts[4]);
  try {
    await runTool(iptBin(6, backend, 'restore'), ['--noflush'], texts[6]);
  } catch (err) {
    try {
      const now = await readIptables(4, backend);
      await runTool(iptBin(4, backend, 'restore'), ['--noflush'], restoreText(prev[4], now, prevNat, await readIptablesNat(4, backend)));
    } catch (rollbackErr) {
      throw new ToolExecError(
        `${(err as Error).message}; and putting the IPv4 rules back failed too: ${(rollbackErr as Error).message}`,
        (err as ToolExecError).command ?? '',
        '',
        null,
      );
    }
    throw err;
  }
}

/** Render for the current state (so existing jumps are replaced, not duplicated) and apply. */
export async function applyIptables(o: FirewallOptions, backend: IptablesBackend = 'auto'): Promise<void> {
  const texts = {} as Record<IpFamily, string>;
  for (const f of FAMILIES) texts[f] = renderIptables(o, f, (await readIptables(f, backend)).jumps, await readIptablesNat(f, backend));
  await applyIptablesTexts(texts, backend);
}

export async function removeIptables(backend: IptablesBackend = 'auto'): Promise<void> {
  for (const f of FAMILIES) {
    const st = await readIptables(f, backend);
    const nat = await readIptablesNat(f, backend);
    if (!st.mainChain && !st.logChain && st.jumps.length === 0 && !nat.chain && nat.jumps.length === 0) continue;
    await runTool(iptBin(f, backend, 'restore'), ['--noflush'], renderIptablesRemoval(st.jumps, { main: st.mainChain, log: st.logChain }, nat));
  }
}

export async function checkIptables(backend: IptablesBackend = 'auto'): Promise<FirewallStatus> {
  const families: FamilyStatus[] = [];
  for (const f of FAMILIES) {
    const st = await readIptables(f, backend);
    const loopbackConfined = st.mainChain && !st.loopbackOpen;
    const nat = await readIptablesNat(f, backend);
    families.push({
      family: f,
      inPlace: st.mainChain && st.logChain && st.jumps.length > 0 && st.closes && loopbackConfined,
      loopbackConfined,
      refused: st.refused,
      redirects: nat.jumps.length > 0 ? nat.redirects : [],
    });
  }
  return summarize('iptables', families);
}

function summarize(tool: FirewallStatus['tool'], families: FamilyStatus[]): FirewallStatus {
  return {
    tool,
    inPlace: families.every((f) => f.inPlace),
    families,
    refused: {
      packets: families.reduce((n, f) => n + f.refused.packets, 0),
      bytes: families.reduce((n, f) => n + f.refused.bytes, 0),
    },
  };
}

/** `nft -f` commits the whole file in one transaction or nothing. */
export async function applyNftablesText(text: string): Promise<void> {
  await runTool('nft', ['-f', '-'], text);
}

export async function applyNftables(o: FirewallOptions): Promise<void> {
  await applyNftablesText(renderNftables(o));
}

export async function removeNftables(): Promise<void> {
  await runTool('nft', ['-f', '-'], renderNftablesRemoval());
}

interface NftJson {
  nftables?: Array<Record<string, any>>;
}

/** `oifname "lo" accept` (or `oif`), with nothing else to narrow it: the old blanket loopback allowance. */
function acceptsAllLoopback(rule: { expr?: Array<Record<string, any>> }): boolean {
  const e = rule.expr ?? [];
  if (e.length !== 2 || !('accept' in e[1])) return false;
  const m = e[0].match;
  return !!m && m.op === '==' && ['oifname', 'oif'].includes(m.left?.meta?.key) && m.right === 'lo';
}

export async function checkNftables(): Promise<FirewallStatus> {
  let doc: NftJson;
  try {
    doc = JSON.parse((await runTool('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE])).stdout) as NftJson;
  } catch (err) {
    // A missing table is "not in place"; any other failure is an error the caller must see.
    if (err instanceof ToolExecError && /No such file or directory/.test(err.stderr)) {
      return summarize('nftables', FAMILIES.map((family) => ({ family, inPlace: false, loopbackConfined: false, refused: { packets: 0, bytes: 0 }, redirects: [] })));
    }
    throw err;
  }
  const items = doc.nftables ?? [];
  const chains = new Set(items.filter((i) => i.chain).map((i) => i.chain.name as string));
  const hooked = items.some((i) => i.chain?.name === 'output' && i.chain.hook === 'output');
  const confineRules = items.filter((i) => i.rule?.chain === 'confine').map((i) => i.rule);
  const last = confineRules[confineRules.length - 1];
  const closes = !!last && JSON.stringify(last.expr).includes('"jump":{"target":"refuse"}');
  const loopbackConfined = chains.has('confine') && !confineRules.some(acceptsAllLoopback);
  // One inet table confines both families at once, so both are in place or neither is.
  const inPlace = hooked && chains.has('confine') && chains.has('refuse') && closes && loopbackConfined;
  const redirects = nftRedirects(items);
  return summarize(
    'nftables',
    FAMILIES.map((family) => {
      const c = items.find((i) => i.counter?.name === NFT_COUNTERS[family])?.counter;
      return { family, inPlace, loopbackConfined, refused: { packets: Number(c?.packets ?? 0), bytes: Number(c?.bytes ?? 0) }, redirects: redirects[family] };
    }),
  );
}

/** The dnat rules of our redirect chain, per family, when the nat hook that jumps to it is in place. */
function nftRedirects(items: Array<Record<string, any>>): Record<IpFamily, SavedRedirect[]> {
  const out: Record<IpFamily, SavedRedirect[]> = { 4: [], 6: [] };
  const natHooked = items.some((i) => i.chain?.name === NFT_NAT_HOOK && i.chain.type === 'nat' && i.chain.hook === 'output');
  const jumps = items.some((i) => i.rule?.chain === NFT_NAT_HOOK && JSON.stringify(i.rule.expr).includes(`"jump":{"target":"${NFT_NAT_CHAIN}"}`));
  if (!natHooked || !jumps) return out;
  for (const rule of items.filter((i) => i.rule?.chain === NFT_NAT_CHAIN).map((i) => i.rule)) {
    const e: Array<Record<string, any>> = rule.expr ?? [];
    const dnat = e.find((x) => 'dnat' in x)?.dnat;
    const dport = e.find((x) => x.match?.left?.payload?.field === 'dport' && ['tcp', 'udp'].includes(x.match.left.payload.protocol))?.match;
    if (!dnat || !dport || typeof dport.right !== 'number') continue;
    const family: IpFamily = dnat.family === 'ip6' ? 6 : 4;
    out[family].push({ protocol: dport.left.payload.protocol, port: dport.right, to: family === 6 ? `[${dnat.addr}]:${dnat.port}` : `${dnat.addr}:${dnat.port}` });
  }
  return out;
}
