import type { CompiledPolicy } from './types.js';

/** The active policy and its history of loads, shared by the proxy, the DNS filter and the admin API. */
export interface PolicyState {
  policy: CompiledPolicy;
  /** ISO time the active policy was loaded. */
  loadedAt: string;
  /** Files it was loaded from (empty when built from flags only). */
  files: string[];
  reloads: number;
  reloadFailures: number;
  /** The last failed reload's message, cleared by a successful one. */
  lastError: { time: string; message: string } | null;
}

export interface PolicyHolder {
  current(): CompiledPolicy;
  state(): PolicyState;
  /** Load, validate and swap; on failure keep the running policy and report why. */
  reload(trigger: 'file' | 'signal' | 'api'): Promise<{ ok: true; hash: string } | { ok: false; error: string }>;
  /** Listeners are called after every successful swap. */
  onChange(fn: (p: CompiledPolicy) => void): void;
}
