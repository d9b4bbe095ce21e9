// CPU time and memory of a process tree, read from /proc (Linux only; the bench is Linux-only).
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* 100 Hz is the Linux default */
}

function childrenOf(pid) {
  try {
    const out = [];
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const c = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (c) out.push(...c.split(/\s+/).map(Number));
    }
    return out;
  } catch {
    return [];
  }
}

/** pid and all its descendants (bounded depth: workers of workers are not expected). */
export function tree(pid) {
  const all = [pid];
  for (let i = 0; i < all.length && i < 256; i++) all.push(...childrenOf(all[i]));
  return all;
}

/** utime + stime of the tree, in microseconds. */
export function cpuMicros(pid) {
  let ticks = 0;
  for (const p of tree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      // Fields after the command name (which may contain spaces) start after the last ')'.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {
      /* exited */
    }
  }
  return (ticks * 1e6) / clkTck;
}

function statusKiB(pid, key) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resident set of the tree, KiB. */
export function rssKiB(pid) {
  return tree(pid).reduce((a, p) => a + statusKiB(p, 'VmRSS'), 0);
}

/** Peak resident set (VmHWM) of the tree, KiB. */
export function hwmKiB(pid) {
  return tree(pid).reduce((a, p) => a + statusKiB(p, 'VmHWM'), 0);
}

/** Samples RSS every intervalMs until stopped; returns the peak seen. */
export function rssSampler(pid, intervalMs = 100) {
  let peak = rssKiB(pid);
  const t = setInterval(() => {
    peak = Math.max(peak, rssKiB(pid));
  }, intervalMs);
  return {
    stop() {
      clearInterval(t);
      return Math.max(peak, rssKiB(pid));
    },
  };
}
