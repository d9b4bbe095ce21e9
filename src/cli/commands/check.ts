import { Command, Option } from 'commander';
import { AddressGuard } from '../../net/guard.js';
import { createResolver } from '../../net/resolve.js';
import { formatAuthority, parseCheckTarget, TargetError } from '../../net/target.js';
import { PolicyError } from '../../policy/types.js';
import { vetDestination } from '../../proxy/vet.js';
import { buildPolicy } from '../../runtime/policy-holder.js';
import { listValue, repeatable } from '../parse.js';

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('Decide TARGET (host:port or URL) against the policy without sending anything. Exit 0 allow, 1 deny, 2 bad input.')
    .argument('<target>', 'host:port, [v6]:port, http://host/path or https://host/path')
    .addOption(new Option('--policy <file>', 'policy YAML file').env('AGENT_EGRESS_POLICY'))
    .option('--agent <name>', 'decide as this agent (default: anonymous)')
    .option('--method <method>', 'HTTP method, for rules that name methods (plain HTTP)')
    .addOption(repeatable('--allow <pattern[:ports]>', 'allow rule, as for serve', 'AGENT_EGRESS_ALLOW'))
    .addOption(repeatable('--deny <pattern[:ports]>', 'deny rule, as for serve', 'AGENT_EGRESS_DENY'))
    .addOption(repeatable('--allow-address <cidr>', 'address guard exemption, as for serve', 'AGENT_EGRESS_ALLOW_ADDRESS'))
    .option('--resolve', 'also resolve the name and apply the address guard (sends a DNS query)')
    .addOption(repeatable('--dns-server <ip[:port]>', 'with --resolve: resolve through these servers', 'AGENT_EGRESS_DNS_SERVER'))
    .option('--json', 'print the decision as JSON')
    .action(async (text: string, o) => {
      let policy;
      let target;
      try {
        policy = buildPolicy(o.policy, { allow: listValue(o.allow), deny: listValue(o.deny), allowAddress: listValue(o.allowAddress) });
        target = parseCheckTarget(text);
      } catch (err) {
        if (err instanceof PolicyError) console.error(`invalid policy\n${err.message}`);
        else if (err instanceof TargetError) console.error(`bad target: ${err.message}`);
        else console.error((err as Error).message);
        process.exit(2);
      }
      if (o.agent && !policy.spec.agents.some((a) => a.name === o.agent)) {
        console.error(`unknown agent ${JSON.stringify(o.agent)} (the policy defines: ${policy.spec.agents.map((a) => a.name).join(', ') || 'none'})`);
        process.exit(2);
      }
      const agent: string | null = o.agent ?? null;
      const method = o.method ? String(o.method).toUpperCase() : undefined;
      let out: Record<string, unknown>;
      if (o.resolve) {
        const resolver = createResolver({ servers: listValue(o.dnsServer).length ? listValue(o.dnsServer) : undefined });
        const v = await vetDestination({ policy, guard: new AddressGuard({ exempt: policy.spec.guardExempt }), resolver }, agent, target, method);
        out = { verdict: v.verdict, mode: v.mode, rule: v.rule, reason: v.reason, addresses: v.ok ? v.addresses : [], refused: v.refused ?? [] };
      } else {
        const d = policy.decide({ agent, host: target.host, port: target.port, method });
        out = { verdict: d.verdict, mode: d.mode, rule: d.rule, reason: d.reason };
      }
      out = { target: formatAuthority(target), agent, ...out, policyHash: policy.hash };
      if (o.json) console.log(JSON.stringify(out));
      else {
        const forwarded = out.verdict === 'deny' && out.mode === 'report' ? ' (report mode: would be forwarded)' : '';
        console.log(`${String(out.verdict).toUpperCase()} ${out.target}${forwarded}`);
        console.log(`  rule:   ${out.rule ?? '-'}`);
        console.log(`  reason: ${out.reason}`);
        if (o.resolve) {
          console.log(`  addresses: ${(out.addresses as string[]).join(', ') || '-'}`);
          for (const r of out.refused as { address: string; why: string }[]) console.log(`  refused: ${r.address} (${r.why})`);
        }
      }
      process.exit(out.verdict === 'allow' ? 0 : 1);
    });
}
