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
  // Loaded only here: the X.509 library and its ASN.1 codecs cost ~15 MiB of RSS and ~1 s of start-up
  // that a proxy without inspection never needs.
  const [{ loadInspectionCa }, { LeafMinter }] = await Promise.all([import('../inspect/ca.js'), import('../inspect/mint.js')]);
  const ca = await loadInspectionCa(caFile, keyFile);
  return { minter: new LeafMinter(ca), upstreamCa: upstreamTrust(opts?.upstreamCaFiles ?? []) };
}
