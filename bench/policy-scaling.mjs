#!/usr/bin/env node
// Policy micro-benchmark: ns per decide() against 10, 1,000 and 100,000 host rules (exact names, suffix
// globs, mid-label globs, CIDRs, plus deny rules). A flat cost across sizes means indexed lookups,
// not a scan of every rule. Usage: node bench/policy-scaling.mjs [--json] [--quick]
// Needs dist/ (npx tsc -p .).
import { compilePolicy, parsePolicyText } from '../dist/policy/index.js';
import { normalizeHost } from '../dist/net/host.js';

const SIZES = [10, 1_000, 100_000];
const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
const DECISIONS = quick ? 200_000 : 1_000_000;

const ip = (i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** Same shape as the 100k correctness test: a fifth each of exact, suffix, mid-label glob, CIDR and deny rules. */
function policyYaml(n) {
  const lines = ['version: 1', 'rules:'];
  for (let i = 0; i < n; i++) {
    switch (i % 5) {
      case 0: lines.push(`  - {name: e${i}, action: allow, hosts: [h${i}.exact.test]}`); break;
      case 1: lines.push(`  - {name: s${i}, action: allow, hosts: ["*.s${i}.test"]}`); break;
      case 2: lines.push(`  - {name: g${i}, action: allow, hosts: ["api-*.g${i}.test"]}`); break;
      case 3: lines.push(`  - {name: c${i}, action: allow, cidrs: [${ip(i)}/32]}`); break;
      default: lines.push(`  - {name: d${i}, action: deny, hosts: [h${i - 4}.exact.test, "x.s${i - 3}.test"]}`);
    }
  }
  return lines.join('\n');
}

/** Queries spread over the whole rule list: hits of every kind, denies, and misses. */
function queries(n) {
  const out = [];
  const blocks = Math.max(1, Math.floor(n / 5));
  for (let k = 0; k < 64; k++) {
    const i = 5 * ((k * 7919) % blocks);
    out.push(`h${i}.exact.test`, `h${i + 5}.exact.test`, `a.b.s${i + 1}.test`, `x.s${i + 1}.test`, `api-z.g${i + 2}.test`, `api.g${i + 2}.test`, ip(i + 3), ip(i + 2), 'unknown.example.com', `deep.a.b.c.s${i + 1}.test`);
  }
  return out.map((h) => ({ agent: null, host: normalizeHost(h), port: 443 }));
}

function measure(policy, reqs, total) {
  let sink = 0;
  // Warm-up so the JIT has settled before the clock starts.
  for (let i = 0; i < 300_000; i++) sink += policy.decide(reqs[i % reqs.length]).verdict.length;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < total; i++) sink += policy.decide(reqs[i % reqs.length]).verdict.length;
  const ns = Number(process.hrtime.bigint() - t0) / total;
  if (sink === 0) throw new Error('unreachable: keeps the loop from being optimised away');
  return ns;
}

const rows = [];
for (const n of SIZES) {
  const t0 = performance.now();
  const spec = parsePolicyText(policyYaml(n), `scaling-${n}.yaml`);
  const t1 = performance.now();
  const policy = compilePolicy(spec, {});
  const t2 = performance.now();
  const reqs = queries(n);
  const verdicts = new Set(reqs.map((r) => policy.decide(r).reason));
  const nsPerDecision = measure(policy, reqs, DECISIONS);
  // The same with host normalisation included: what the proxy pays per request for the policy step.
  const texts = reqs.map((r) => r.host.value);
  let nsWithNormalize = NaN;
  if (texts.every((t) => typeof t === 'string')) {
    const t3 = process.hrtime.bigint();
    const total = Math.floor(DECISIONS / 4);
    for (let i = 0; i < total; i++) policy.decide({ agent: null, host: normalizeHost(texts[i % texts.length]), port: 443 });
    nsWithNormalize = Number(process.hrtime.bigint() - t3) / total;
  }
  rows.push({ rules: n, parseMs: Math.round(t1 - t0), compileMs: Math.round(t2 - t1), nsPerDecision: Math.round(nsPerDecision), nsWithNormalize: Math.round(nsWithNormalize), reasons: [...verdicts].sort() });
}

if (json) {
  process.stdout.write(JSON.stringify({ decisions: DECISIONS, rows }) + '\n');
} else {
  console.log(`policy decide() scaling, ${DECISIONS.toLocaleString('en-US')} decisions per size (mixed hits, denies, misses)`);
  console.log('| host rules | parse YAML (ms) | compile (ms) | ns per decide() | ns with normalizeHost |');
  console.log('|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.rules.toLocaleString('en-US')} | ${r.parseMs} | ${r.compileMs} | ${r.nsPerDecision} | ${r.nsWithNormalize} |`);
}
