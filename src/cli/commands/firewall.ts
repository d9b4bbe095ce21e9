import { Command, Option } from 'commander';
import { FirewallExecError } from '../../firewall/exec.js';
import {
  applyIptables,
  applyNftables,
  checkIptables,
  checkNftables,
  removeIptables,
  removeNftables,
  type FirewallStatus,
  type IptablesBackend,
} from '../../firewall/apply.js';
import { renderIptables } from '../../firewall/iptables.js';
import { renderNftables } from '../../firewall/nftables.js';
import { FirewallOptionError, parseAllowedDest, parseFirewallOptions, type RawFirewallFlags } from '../../firewall/options.js';
import { checkName, DEFAULT_AGENT_LABELS, DEFAULT_PROXY_LABELS, parseLabels, renderKubernetes } from '../../firewall/kubernetes.js';
import { checkDockerName, renderDocker } from '../../firewall/docker.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

function ruleOptions(cmd: Command): Command {
  return cmd
    .option('--proxy <addr:port>', 'proxy listener the agent may reach (repeatable; [v6]:port for IPv6)', collect)
    .option('--proxy-uid <uid>', 'same-host mode: this user (the proxy) is not confined (repeatable)', collect)
    .option('--agent-uid <uid>', 'confine only this user instead of the whole namespace (repeatable)', collect)
    .option('--dns-server <addr[:port]>', 'resolver the agent may query over UDP/TCP (repeatable; default none)', collect)
    .option('--allow-dest <cidr[:ports]>', 'extra destination the agent may reach, e.g. 10.0.5.7:11434 (repeatable)', collect)
    .addOption(new Option('--action <action>', 'what happens to everything else').choices(['reject', 'drop']).default('reject'))
    .option('--log-prefix <text>', 'kernel log prefix of refused packets')
    .option('--log-rate <perMinute>', 'log at most this many refused packets a minute');
}

function toolOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tool <tool>', 'rule tool').choices(['nftables', 'iptables']).default('nftables'))
    .addOption(new Option('--backend <backend>', 'iptables variant').choices(['auto', 'nft', 'legacy']).default('auto'));
}

interface CliFlags extends RawFirewallFlags {
  format?: string;
  family?: string;
  tool?: 'nftables' | 'iptables';
  backend?: IptablesBackend;
  counters?: boolean;
  json?: boolean;
  name?: string;
  namespace?: string;
  agentLabel?: string;
  proxyLabel?: string;
  proxyPort?: string[];
  dnsLabel?: string;
  dnsPort?: string;
  internalNetwork?: string;
  outsideNetwork?: string;
  proxyName?: string;
  image?: string;
}

function port(s: string, flag: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw new FirewallOptionError(`${flag}: bad port ${JSON.stringify(s)}`);
  return Number(s);
}

export function renderFor(flags: CliFlags): string {
  switch (flags.format) {
    case 'nftables':
      return renderNftables(parseFirewallOptions(flags));
    case 'iptables': {
      const o = parseFirewallOptions(flags);
      const fams = flags.family === '4' ? [4 as const] : flags.family === '6' ? [6 as const] : [4 as const, 6 as const];
      return fams.map((f) => renderIptables(o, f)).join('\n');
    }
    case 'kubernetes':
      return renderKubernetes({
        name: checkName('--name', flags.name ?? 'agents-egress-only-via-proxy'),
        namespace: checkName('--namespace', flags.namespace ?? 'agent-egress'),
        agentLabels: flags.agentLabel ? parseLabels(flags.agentLabel) : DEFAULT_AGENT_LABELS,
        proxyLabels: flags.proxyLabel ? parseLabels(flags.proxyLabel) : DEFAULT_PROXY_LABELS,
        proxyPorts: [...new Set((flags.proxyPort ?? ['3128']).map((p) => port(p, '--proxy-port')))],
        dnsLabels: flags.dnsLabel ? parseLabels(flags.dnsLabel) : null,
        dnsPort: port(flags.dnsPort ?? '53', '--dns-port'),
        allowDests: (flags.allowDest ?? []).map(parseAllowedDest),
      });
    case 'docker':
      return renderDocker({
        internalNetwork: checkDockerName('--internal-network', flags.internalNetwork ?? 'agents'),
        outsideNetwork: checkDockerName('--outside-network', flags.outsideNetwork ?? 'outside'),
        proxyName: checkDockerName('--proxy-name', flags.proxyName ?? 'egress'),
        proxyPort: port(flags.proxyPort?.[0] ?? '3128', '--proxy-port'),
        image: flags.image ?? 'agent-egress:latest',
      });
    default:
      throw new FirewallOptionError(`--format must be iptables, nftables, kubernetes or docker`);
  }
}

/** Option errors are bad input (exit 2); tool failures mean the rules could not be changed (exit 1). */
async function guarded(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof FirewallOptionError) {
      process.stderr.write(`agent-egress firewall: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof FirewallExecError) {
      process.stderr.write(`agent-egress firewall: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

function describe(st: FirewallStatus, counters: boolean): string {
  const lines = [`${st.tool}: ${st.inPlace ? 'in place' : 'NOT in place'}`];
  for (const f of st.families) {
    let l = `  IPv${f.family}: ${f.inPlace ? 'confined' : 'open'}`;
    if (counters) l += `, refused ${f.refused.packets} packets (${f.refused.bytes} bytes)`;
    lines.push(l);
  }
  return lines.join('\n') + '\n';
}

export function registerFirewall(program: Command): void {
  const fw = program
    .command('firewall')
    .description('Companion firewall rules: the agent may reach the proxy and nothing else (IPv4 and IPv6).');

  ruleOptions(fw.command('render').description('print the rules for a deployment'))
    .addOption(new Option('--format <format>', 'output format').choices(['iptables', 'nftables', 'kubernetes', 'docker']).default('nftables'))
    .addOption(new Option('--family <family>', 'iptables: only this family').choices(['4', '6']))
    .option('--name <name>', 'kubernetes: NetworkPolicy name')
    .option('--namespace <ns>', 'kubernetes: namespace')
    .option('--agent-label <k=v,...>', 'kubernetes: labels of agent pods')
    .option('--proxy-label <k=v,...>', 'kubernetes: labels of proxy pods')
    .option('--proxy-port <port>', 'kubernetes/docker: proxy port (repeatable)', collect)
    .option('--dns-label <k=v,...>', 'kubernetes: labels of the filtering DNS resolver pods')
    .option('--dns-port <port>', 'kubernetes: DNS port')
    .option('--internal-network <name>', 'docker: the agents\' network (no route out)')
    .option('--outside-network <name>', 'docker: the proxy\'s way out')
    .option('--proxy-name <name>', 'docker: proxy service name')
    .option('--image <image>', 'docker: proxy image')
    .action((flags: CliFlags) => guarded(async () => void process.stdout.write(renderFor(flags))));

  toolOptions(ruleOptions(fw.command('apply').description('apply the rules in this network namespace, atomically'))).action((flags: CliFlags) =>
    guarded(async () => {
      const o = parseFirewallOptions(flags);
      if (flags.tool === 'iptables') await applyIptables(o, flags.backend);
      else await applyNftables(o);
      process.stdout.write(`agent-egress firewall: ${flags.tool} rules applied (IPv4 and IPv6)\n`);
    }),
  );

  toolOptions(fw.command('remove').description('take our rules out; every other rule stays')).action((flags: CliFlags) =>
    guarded(async () => {
      if (flags.tool === 'iptables') await removeIptables(flags.backend);
      else await removeNftables();
      process.stdout.write(`agent-egress firewall: ${flags.tool} rules removed\n`);
    }),
  );

  toolOptions(fw.command('check').description('say whether the rules are in place (exit 0) or not (exit 1)'))
    .option('--counters', 'also print how many packets the rules refused')
    .option('--json', 'print the status as JSON')
    .action((flags: CliFlags) =>
      guarded(async () => {
        const st = flags.tool === 'iptables' ? await checkIptables(flags.backend) : await checkNftables();
        process.stdout.write(flags.json ? JSON.stringify(st) + '\n' : describe(st, !!flags.counters));
        process.exitCode = st.inPlace ? 0 : 1;
      }),
    );
}
