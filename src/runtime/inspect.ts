import { loadInspectionCa } from '../inspect/ca.js';
import { LeafMinter } from '../inspect/mint.js';
import type { Inspector } from '../inspect/tunnel.js';
import { upstreamTrust } from '../inspect/upstream.js';
import type { PolicySpec } from '../policy/types.js';

/**
 * The inspection CA from the flags, else from the policy loaded at start (read once: a reload that
 * changes `inspection:` takes effect at the next start). null when neither names one.
 */
export async function startInspector(
  opts: { caFile?: string; caKeyFile?: string; upstreamCaFiles?: string[] } | undefined,
  spec: PolicySpec,
): Promise<Inspector | null> {
  const caFile = opts?.caFile ?? spec.inspection?.ca;
  const keyFile = opts?.caFile ? opts.caKeyFile : spec.inspection?.caKey;
  if (!caFile || !keyFile) return null;
  const ca = await loadInspectionCa(caFile, keyFile);
  return { minter: new LeafMinter(ca), upstreamCa: upstreamTrust(opts?.upstreamCaFiles ?? []) };
}
