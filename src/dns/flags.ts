import { DnsConfigError } from './endpoint.js';

/** `--dns-refuse-code nxdomain|refused` (case-insensitive). */
export function parseRefuseCode(text: string): 'NXDOMAIN' | 'REFUSED' {
  const up = text.trim().toUpperCase();
  if (up === 'NXDOMAIN' || up === 'REFUSED') return up;
  throw new DnsConfigError(`--dns-refuse-code must be nxdomain or refused, not ${JSON.stringify(text)}`);
}

/**
 * `--dns-rate-limit N[/BURST]`: N queries per second per client, bursts up to BURST (default 2N).
 * `0` turns the limit off (null).
 */
export function parseRateLimit(text: string): { perSecond: number; burst: number } | null {
  const m = /^(\d+(?:\.\d+)?)(?:\/(\d+))?$/.exec(text.trim());
  if (!m) throw new DnsConfigError(`--dns-rate-limit must be N or N/BURST, not ${JSON.stringify(text)}`);
  const perSecond = Number(m[1]);
  if (perSecond === 0) return null;
  const burst = m[2] !== undefined ? Number(m[2]) : Math.max(1, Math.ceil(perSecond * 2));
  if (burst < 1) throw new DnsConfigError('--dns-rate-limit burst must be at least 1');
  return { perSecond, burst };
}

/** `--dns-cache-size N` (0 = no cache). */
export function parseCacheSize(text: string): number {
  if (!/^\d{1,9}$/.test(text.trim())) throw new DnsConfigError(`--dns-cache-size must be a whole number, not ${JSON.stringify(text)}`);
  return Number(text.trim());
}
