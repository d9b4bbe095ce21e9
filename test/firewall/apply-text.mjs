// Apply hand-written rule texts through the real apply code, inside whatever namespace runs this.
// `node apply-text.mjs nftables FILE` or `node apply-text.mjs iptables BACKEND FILE4 FILE6`.
import { readFileSync } from 'node:fs';
import { applyIptablesTexts, applyNftablesText } from '../../dist/firewall/apply.js';

const [tool, ...rest] = process.argv.slice(2);
try {
  if (tool === 'nftables') await applyNftablesText(readFileSync(rest[0], 'utf8'));
  else await applyIptablesTexts({ 4: readFileSync(rest[1], 'utf8'), 6: readFileSync(rest[2], 'utf8') }, rest[0]);
  process.stdout.write('applied\n');
} catch (err) {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}
