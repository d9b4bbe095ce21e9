import { Command, Option } from 'commander';
import { attribute } from '../../decisions/attribution.js';
import { AddressGuard } from '../../net/guard.js';
import { createResolver } from '../../net/resolve.js';
import { formatAuthority, parseCheckTarget, TargetError, type Target } from '../../net/target.js';
import { PolicyError } from '../../policy/types.js';
import { vetDestination } from '../../proxy/vet.js';
import { decideAsProxy } from '../../proxy/request-check.js';
import { buildPolicy } from '../../runtime/policy-holder.js';
import { listValue, repeatable } from '../parse.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { GRANTS_FILE, GrantStore } from '../../approvals/grant-store.js';
import { mergeGrants } from '../../approvals/grants-file.js';
import type { ApprovalGate } from '../../approvals/types.js';

/**
 * What `check --resolve` holds an ask on: it answers at once, so the request goes as far as the proxy
 * would take it before asking (a guard refusal is never asked about); check then reports "ask".
 */
const PROBE: ApprovalGate = { hold: async () => ({ kind: 'approved', approvalId: '', by: 'check', scope: 'once', grant: null }) };

/**
 * How the proxy would receive TARGET: an http:// URL arrives as a plain request with its method (GET
 * unless told); an https:// URL or a bare host[:port] arrives as a CONNECT, whose method the proxy
 * cannot see. A bare host gets port 443, as a client opening HTTPS to it would use.
 */
export function checkRequest(
  text: string,
  method: string | undefined,
): { target: Target; via: 'http' | 'connect'; method?: string; path?: string; query?: string } {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    const bare = text.startsWith('[') ? text.endsWith(']') : !text.includes(':');
    return { target: parseCheckTarget(bare ? `${text}:443` : text), via: 'connect' };
  }
  const target = parseCheckTarget(text);
  // The request target after the authority, without a fragment: what request rules judge.
  const rest = text.slice(text.indexOf('://') + 3).replace(/#.*$/s, '');
  const cut = rest.search(/[/?]/);
  const tail = cut === -1 ? '/' : rest.slice(cut);
  const q = tail.indexOf('?');
  const path = (q === -1 ? tail : tail.slice(0, q)) || '/';
  const query = q === -1 ? '' : tail.slice(q);
  if (scheme === 'http') return { target, via: 'http', method: method ?? 'GET', path, query };
  // https: a CONNECT; the method and path matter only if the deciding rule inspects the tunnel.
  return { target, via: 'connect', method, path, query };
}

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description(
      'Decide TARGET against the policy exactly as the proxy would, without sending anything. An http:// URL is ' +
        'decided as a plain request (with --method, default GET); an https:// URL or host[:port] as a CONNECT tunnel ' +
        '(port 443 when none is given), where the method is not visible, so a rule with methods refuses it. ' +
        'A tunnel the proxy opens is also checked on its first bytes (SNI, Host, the rule\'s protocols; docs/capture.md), which check cannot see. ' +
        'ASK means the proxy would hold the request for an approval (docs/approvals.md). ' +
        'Exit 0 allow, 1 deny, 2 bad input or no policy, 3 ask.',
    )
    .argument('<target>', 'host, host:port, [v6]:port, http://host/path or https://host/path')
    .addOption(new Option('--policy <file>', 'policy YAML file, as for serve (without it and without --allow/--deny there is no policy: exit 2)').env('AGENT_EGRESS_POLICY'))
    .option('--agent <name>', 'decide as this agent (default: anonymous)')
    .option('--method <method>', 'HTTP method of an http:// request (default GET); an https:// target is a CONNECT whatever the method')
    .addOption(repeatable('--allow <pattern[:ports]>', 'allow rule, as for serve', 'AGENT_EGRESS_ALLOW'))
    .addOption(repeatable('--deny <pattern[:ports]>', 'deny rule, as for serve', 'AGENT_EGRESS_DENY'))
    .addOption(repeatable('--allow-address <cidr>', 'address guard exemption, as for serve', 'AGENT_EGRESS_ALLOW_ADDRESS'))
    .option('--resolve', 'also resolve the name and apply the address guard (sends a DNS query)')
    .addOption(repeatable('--dns-server <ip[:port]>', 'with --resolve: resolve through these servers', 'AGENT_EGRESS_DNS_SERVER'))
    .option('--json', 'print the decision as JSON')
    .addOption(new Option('--grants-file <file>', 'the grants file serve merges into the policy (default <data-dir>/grants.yaml when it exists)').env('AGENT_EGRESS_GRANTS_FILE'))
    .addOption(new Option('--data-dir <dir>', 'serve\'s data dir, where the grants file is by default').env('AGENT_EGRESS_DATA_DIR').default('./data'))
    .action(async (text: string, o) => {
      const flags = { allow: listValue(o.allow), deny: listValue(o.deny), allowAddress: listValue(o.allowAddress) };
      if (!o.policy && flags.allow.length === 0 && flags.deny.length === 0) {
        // Deciding against an empty policy would answer "deny" for everything and look like an answer.
        console.error('no policy loaded: pass --policy FILE (or AGENT_EGRESS_POLICY), or --allow/--deny rules');
        process.exit(2);
      }
      let policy;
      let asked;
      try {
        // check mints nothing and sends nothing: no inspection CA needed, secret values not read.
        const grantsFile: string = o.grantsFile ?? path.join(o.dataDir, GRANTS_FILE);
        let transform;
        if (o.grantsFile || existsSync(grantsFile)) {
          const grants = new GrantStore({ file: grantsFile });
          grants.load();
          transform = (spec: Parameters<typeof mergeGrants>[0]) => mergeGrants(spec, grants.rules());
        }
        policy = buildPolicy(o.policy, flags, process.env, { inspectCa: true, secretValues: false, transform });
        asked = checkRequest(text, o.method ? String(o.method).toUpperCase() : undefined);
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
      const { target, via, method } = asked;
      const agent: string | null = o.agent ?? null;
      let out: Record<string, unknown>;
      const r = decideAsProxy(policy, agent, asked);
      if (o.resolve) {
        const resolver = createResolver({ servers: listValue(o.dnsServer).length ? listValue(o.dnsServer) : undefined });
        const v = await vetDestination({ policy, guard: new AddressGuard({ exempt: policy.spec.guardExempt }), resolver, approvals: PROBE }, agent, target, via === 'http' ? method : undefined);
        // Named as the proxy's record names it: no rule for a guard refusal or failed lookup after an allow.
        const rule = v.decision ? attribute(v.decision, { verdict: v.verdict, reason: v.reason }).rule : v.rule;
        out = { verdict: v.verdict, mode: v.mode, rule, reason: v.reason, addresses: v.ok ? v.addresses : [], refused: v.refused ?? [] };
        // Held and not decided: the proxy would ask (the addresses passed the guard).
        if (v.approval) out = { ...out, verdict: 'ask', reason: 'approval_required', rule: v.decision?.rule ?? null, addresses: v.ok ? v.addresses : [] };
        // Request rules (paths, and methods inside an inspected tunnel) are pure: judged after the addresses pass.
        if (v.ok && !v.approval && (via === 'http' || r.inspected)) out = { ...out, verdict: r.decision.verdict, mode: r.decision.mode, rule: r.decision.rule, reason: r.decision.reason, inspected: r.inspected };
      } else {
        const d = r.decision;
        out = { verdict: d.ask && d.mode === 'enforce' ? 'ask' : d.verdict, mode: d.mode, rule: d.rule, reason: d.reason, inspected: r.inspected };
      }
      const inspected = out.inspected === true;
      out = { target: formatAuthority(target), via, method: via === 'http' || inspected ? method ?? 'GET' : 'CONNECT', path: via === 'http' || inspected ? r.path ?? asked.path : undefined, agent, ...out, policyHash: policy.hash };
      if (o.json) console.log(JSON.stringify(out));
      else {
        const forwarded = out.verdict === 'deny' && out.mode === 'report' ? ' (report mode: would be forwarded)' : '';
        console.log(`${String(out.verdict).toUpperCase()} ${out.target}${forwarded}`);
        console.log(
          `  as:     ${inspected ? `${out.method} ${asked.path} inside an inspected CONNECT tunnel` : via === 'connect' ? 'CONNECT tunnel (methods inside are not visible)' : `${method} ${asked.path} (plain HTTP)`}`,
        );
        if (via === 'connect' && !inspected && o.method) console.log(`  note:   ${String(o.method).toUpperCase()} does not apply: the proxy sees only the CONNECT`);
        console.log(`  rule:   ${out.rule ?? '-'}`);
        console.log(`  reason: ${out.reason}`);
        if (o.resolve) {
          console.log(`  addresses: ${(out.addresses as string[]).join(', ') || '-'}`);
          for (const r of out.refused as { address: string; why: string }[]) console.log(`  refused: ${r.address} (${r.why})`);
        }
      }
      process.exit(out.verdict === 'allow' ? 0 : out.verdict === 'ask' ? 3 : 1);
    });
}
