import { Writable } from 'node:stream';
import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { displaySafe, safeJson } from '../decisions/display.js';

/** Operational log format: `auto` is pretty on a terminal, JSON lines otherwise. */
export type OpLogFormat = 'auto' | 'pretty' | 'json';
export const OP_LOG_FORMATS: readonly OpLogFormat[] = ['auto', 'pretty', 'json'];

export interface OpLogOptions {
  level: string;
  format: OpLogFormat;
  /** File descriptor to write to. Default 2 (stderr). */
  fd?: number;
  /** Colours in pretty output. Default: on unless NO_COLOR is set. */
  color?: boolean;
}

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: 'TRACE', color: '\x1b[90m' },
  20: { name: 'DEBUG', color: '\x1b[90m' },
  30: { name: 'INFO ', color: '\x1b[32m' },
  40: { name: 'WARN ', color: '\x1b[1;33m' },
  50: { name: 'ERROR', color: '\x1b[1;31m' },
  60: { name: 'FATAL', color: '\x1b[1;35m' },
};
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';
/** pino's own fields, shown in the line's frame rather than as key=value. */
const FRAME = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/** A logged host or path must not drive the terminal: control and bidi characters show as escapes. */
const printable = displaySafe;

function value(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? safeJson(v) : printable(v);
  return printable(safeJson(v) ?? String(v));
}

/** One pino JSON line as one human line: `12:00:00.000 INFO  message key=value …`. */
export function prettyLine(json: string, color: boolean): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json);
  } catch {
    return printable(json.trimEnd()) + '\n';
  }
  const lvl = LEVELS[Number(o.level)] ?? { name: String(o.level).toUpperCase().padEnd(5), color: '' };
  const time = new Date(Number(o.time)).toISOString().slice(11, 23);
  const fields = Object.entries(o)
    .filter(([k, v]) => !FRAME.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => (color ? `${DIM}${k}=${RESET}${value(v)}` : `${k}=${value(v)}`))
    .join(' ');
  const msg = printable(String(o.msg ?? ''));
  const head = color ? `${DIM}${time}${RESET} ${lvl.color}${lvl.name}${RESET} ${Number(o.level) >= 40 ? `${lvl.color}${msg}${RESET}` : msg}` : `${time} ${lvl.name} ${msg}`;
  return `${head}${fields ? ` ${fields}` : ''}\n`;
}

/** Whether `auto` means pretty for this descriptor. */
export function wantsPretty(format: OpLogFormat, fd = 2): boolean {
  return format === 'pretty' || (format === 'auto' && isatty(fd));
}

/** The operational logger (stderr by default): JSON lines for machines, pretty lines for a person. */
export function createOpLogger(o: OpLogOptions): Logger {
  const fd = o.fd ?? 2;
  if (!wantsPretty(o.format, fd)) return pino({ level: o.level }, pino.destination(fd));
  const color = o.color ?? !process.env.NO_COLOR;
  const dest = pino.destination({ fd, sync: true });
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) dest.write(prettyLine(line, color));
      done();
    },
  });
  return pino({ level: o.level }, stream);
}

/** The start-up warning for a policy that blocks nothing (or not for everyone); null when it enforces. */
export function reportModeWarning(spec: { mode: string; agents: { name: string; mode: string | null }[] }): { msg: string; agents?: string[] } | null {
  const reporting = spec.agents.filter((a) => (a.mode ?? spec.mode) === 'report').map((a) => a.name);
  if (spec.mode === 'report') {
    const enforced = spec.agents.filter((a) => a.mode === 'enforce').map((a) => a.name);
    return { msg: `REPORT MODE: nothing is blocked${enforced.length ? ` except for agents ${enforced.join(', ')}` : ''}; would-be denials are only recorded`, ...(enforced.length ? { agents: enforced } : {}) };
  }
  if (reporting.length) return { msg: `REPORT MODE for agents ${reporting.join(', ')}: nothing they request is blocked`, agents: reporting };
  return null;
}
