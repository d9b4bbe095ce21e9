#!/usr/bin/env node
// Thin launcher so `npm start`, `npx agent-egress` and the bin link all run the compiled CLI, in this
// process: it never spawns a child of its own.
//
// Under npm (`npx agent-egress serve`, `npm start`) the tree is npm -> sh -c -> node. Stopping npm
// with SIGTERM kills only its direct child, the shell, which does not pass the signal on: node was
// left running with PPID 1. So when npm started us, our parent going away means we were told to stop:
// we stop as if we got the signal ourselves (graceful drain). Outside npm, being reparented is normal
// (`nohup agent-egress serve &`, then the shell exits) and is not watched.
if (process.env.npm_command || process.env.npm_lifecycle_event) {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
  }, 500).unref();
}
import('../dist/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(70);
});
