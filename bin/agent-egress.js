#!/usr/bin/env node
// Thin launcher so `npm start`, `npx agent-egress` and the bin link all run the compiled CLI.
import('../dist/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(70);
});
