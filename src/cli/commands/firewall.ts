import { Command, Option } from 'commander';
import { ToolExecError } from '../../process/run-tool.js';
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
import { FirewallOptionError, parseAllowedDest, parseEndpoint, parseFirewallOptions, type FirewallOptions, type RawFirewallFlags } from '../../firewall/options.js';
import { checkName, DEFAULT_AGENT_LABELS, DEFAULT_PROXY_LABELS, parseLabels, renderKubernetes } from '../../firewall/kubernetes.js';
import { checkDockerName, checkHostPath, renderDocker } from '../../firewall/docker.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

function ruleOptions(cmd: Command): Command {
  return cmd
    .option('--proxy <addr:port>', 'a listener of the proxy the agent may reach over TCP, loopback included (repeatable: every --listen the agent uses; [v6]:port for IPv6)', collect)
    .option('--proxy-uid <uid>', 'same-host mode: this user (the proxy) is not confined (repeatable)', collect)
    .option('--agent-uid <uid>', 'confine only this user instead of the whole namespace (repeatable)', collect)
    .option('--dns-server <addr[:port]>', 'resolver the agent may query over UDP/TCP (repeatable; default none)', collect)
    .option('--allow-dest <cidr[:ports]>', 'extra destination the agent may reach, e.g. 10.0.5.7:11434 or 127.0.0.1/32:5432 (repeatable)', collect)
    .option('--agent-local-port <ports>', 'ports on this host\'s own addresses (lo) for servers the agent runs itself, e.g. 3000,5173-5180 (repeatable; default none)', collect)
    .option(
      '--transparent <[port=]addr:port>',
      'transparent capture: redirect the agent\'s TCP to the captured ports to the proxy\'s --transparent-listen; HOST:PORT serves captured port i at PORT+i, PORT=HOST:PORT maps one port (repeatable, one HOST:PORT per IP family)',
      collect,
    )
    .option('--capture-ports <ports>', 'the ports --transparent HOST:PORT captures, in the order serve numbers them (default 80,443)', collect)
    .option('--dns <addr[:port]>', 'redirect the agent\'s UDP and TCP port 53 to this filtering resolver (serve --dns-listen; repeatable, one per IP family)', collect)
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
  tool?: 'nftables' | 'iptables' | RenderTool;
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
  policyFile?: string;
}

function port(s: string, flag: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw new FirewallOptionError(`${flag}: bad port ${JSON.stringify(s)}`);
  return Number(s);
}

const RENDER_TOOLS = ['nftables', 'iptables', 'kubernetes', 'docker'] as const;
type RenderTool = (typeof RENDER_TOOLS)[number];

/** `--tool`, or its older spelling `--format` on render; both at once must agree. */
function renderTool(flags: CliFlags): RenderTool {
  if (flags.tool && flags.format && flags.tool !== flags.format) {
    throw new FirewallOptionError(`--format is the older name of --tool: --tool ${flags.tool} and --format ${flags.format} disagree`);
  }
  return (flags.tool ?? flags.format ?? 'nftables') as RenderTool;
}

/**
 * The proxy ports of a deployment: `--proxy-port`, plus the port of every `--proxy ADDR:PORT` (the
 * address means nothing to a NetworkPolicy or a compose file, the port does). 3128 when neither is given.
 */
function deploymentProxyPorts(flags: CliFlags): number[] {
  const ports = [
    ...(flags.proxyPort ?? []).map((p) => port(p, '--proxy-port')),
    ...(flags.proxy ?? []).map((p) => parseEndpoint(p).port),
  ];
  return ports.length === 0 ? [3128] : [...new Set(ports)];
}

/** The DNS port for Kubernetes: `--dns-port`, or the port of `--dns-server`; they must agree. */
function deploymentDnsPort(flags: CliFlags): number {
  const ports = new Set([
    ...(flags.dnsPort === undefined ? [] : [port(flags.dnsPort, '--dns-port')]),
    ...(flags.dnsServer ?? []).map((d) => parseEndpoint(d, 53).port),
  ]);
  if (ports.size > 1) throw new FirewallOptionError(`--dns-port and --dns-server name different ports (${[...ports].join(', ')}): one DNS port per policy`);
  return ports.size === 0 ? 53 : [...ports][0];
}

/** Parse the rule options, saying on stderr what they would probably get wrong. */
function ruleSet(flags: CliFlags): FirewallOptions {
  const o = parseFirewallOptions(flags);
  for (const w of o.warnings) process.stderr.write(`agent-egress firewall: warning: ${w}\n`);
  return o;
}

export function renderFor(flags: CliFlags): string {
  const tool = renderTool(flags);
  if ((tool === 'kubernetes' || tool === 'docker') && (flags.transparent || flags.capturePorts || flags.dns)) {
    throw new FirewallOptionError(`--transparent, --capture-ports and --dns are nftables/iptables rules: in ${tool}, apply them in the agent's network namespace (see docs/deploy.md)`);
  }
  switch (tool) {
    case 'nftables':
      return renderNftables(ruleSet(flags));
    case 'iptables': {
      const o = ruleSet(flags);
      const fams = flags.family === '4' ? [4 as const] : flags.family === '6' ? [6 as const] : [4 as const, 6 as const];
      return fams.map((f) => renderIptables(o, f)).join('\n');
    }
    case 'kubernetes':
      return renderKubernetes({
        name: checkName('--name', flags.name ?? 'agents-egress-only-via-proxy'),
        namespace: checkName('--namespace', flags.namespace ?? 'agent-egress'),
        agentLabels: flags.agentLabel ? parseLabels(flags.agentLabel) : DEFAULT_AGENT_LABELS,
        proxyLabels: flags.proxyLabel ? parseLabels(flags.proxyLabel) : DEFAULT_PROXY_LABELS,
        proxyPorts: deploymentProxyPorts(flags),
        dnsLabels: flags.dnsLabel ? parseLabels(flags.dnsLabel) : null,
        dnsPort: deploymentDnsPort(flags),
        allowDests: (flags.allowDest ?? []).map(parseAllowedDest),
      });
    case 'docker': {
      const ports = deploymentProxyPorts(flags);
      if (ports.length > 1) throw new FirewallOptionError(`docker: one proxy port, not ${ports.join(', ')}`);
      return renderDocker({
        internalNetwork: checkDockerName('--internal-network', flags.internalNetwork ?? 'agents'),
        outsideNetwork: checkDockerName('--outside-network', flags.outsideNetwork ?? 'outside'),
        proxyName: checkDockerName('--proxy-name', flags.proxyName ?? 'egress'),
        proxyPort: ports[0],
        image: flags.image ?? 'agent-egress:latest',
        policyFile: checkHostPath('--policy-file', flags.policyFile ?? './policy.yaml'),
      });
    }
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
    if (err instanceof ToolExecError) {
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
    l += f.loopbackConfined ? ', loopback confined' : ', loopback OPEN (apply the rules to confine it)';
    if (counters) l += `, refused ${f.refused.packets} packets (${f.refused.bytes} bytes)`;
    if (f.redirects.length > 0) l += `, redirects ${f.redirects.map((r) => `${r.protocol}/${r.port} -> ${r.to}`).join(', ')}`;
    lines.push(l);
  }
  return lines.join('\n') + '\n';
}

export function registerFirewall(program: Command): void {
  const fw = program
    .command('firewall')
    .description(
      'Companion firewall rules: the agent may reach the proxy and nothing else (IPv4 and IPv6); with --transparent, its connections to the captured ports are redirected to the proxy (see docs/capture.md).',
    );

  ruleOptions(fw.command('render').description('print the rules for a deployment'))
    .addOption(new Option('--tool <tool>', 'what to render for (default nftables)').choices([...RENDER_TOOLS]))
    .addOption(new Option('--format <tool>', 'older name of --tool, kept as an alias').choices([...RENDER_TOOLS]))
    .addOption(new Option('--family <family>', 'iptables: only this family').choices(['4', '6']))
    .option('--name <name>', 'kubernetes: NetworkPolicy name')
    .option('--namespace <ns>', 'kubernetes: namespace')
    .option('--agent-label <k=v,...>', 'kubernetes: labels of agent pods')
    .option('--proxy-label <k=v,...>', 'kubernetes: labels of proxy pods')
    .option('--proxy-port <port>', 'kubernetes/docker: proxy port (repeatable; the ports of --proxy count too; default 3128)', collect)
    .option('--dns-label <k=v,...>', 'kubernetes: labels of the filtering DNS resolver pods')
    .option('--dns-port <port>', 'kubernetes: DNS port (default: the port of --dns-server, else 53)')
    .option('--internal-network <name>', 'docker: the agents\' network (no route out)')
    .option('--outside-network <name>', 'docker: the proxy\'s way out')
    .option('--proxy-name <name>', 'docker: proxy service name')
    .option('--image <image>', 'docker: proxy image')
    .option('--policy-file <path>', 'docker: the policy file on the Docker host, mounted read-only into the proxy (default ./policy.yaml)')
    .action((flags: CliFlags) => guarded(async () => void process.stdout.write(renderFor(flags))));

  toolOptions(ruleOptions(fw.command('apply').description('apply the rules in this network namespace, atomically'))).action((flags: CliFlags) =>
    guarded(async () => {
      const o = ruleSet(flags);
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
