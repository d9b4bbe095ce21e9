// The policy engine's public API: load and validate, apply CLI flags, compile for decisions.
export { parsePolicyText, loadPolicyFile } from './load.js';
export { applyFlags, parseFlagTarget, type PolicyFlags } from './flags.js';
export { compilePolicy, policyHash, type CompiledPolicyWithWarnings } from './compile.js';
export { PolicyError } from './types.js';
export type * from './types.js';
