import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

// src/policy/policy-validator.ts is ajv's standalone compilation of src/policy/policy-schema.ts: a schema
// changed without regenerating it would validate policies against the old shape.
const ROOT = resolve(__dirname, '../..');

describe('the precompiled policy validator', () => {
  it('is what scripts/gen-policy-validator.mjs makes of the current schema', async () => {
    const { generate, OUTPUT } = (await import(join(ROOT, 'scripts/gen-policy-validator.mjs'))) as { generate: (s: unknown) => string; OUTPUT: string };
    const { policySchema } = (await import(join(ROOT, 'dist/policy/policy-schema.js'))) as { policySchema: unknown };
    expect(OUTPUT).toBe(join(ROOT, 'src/policy/policy-validator.ts'));
    expect(readFileSync(OUTPUT, 'utf8')).toBe(generate(policySchema));
  });

  it('a schema change shows as a different validator', async () => {
    const { generate } = (await import(join(ROOT, 'scripts/gen-policy-validator.mjs'))) as { generate: (s: unknown) => string };
    const { policySchema } = (await import(join(ROOT, 'dist/policy/policy-schema.js'))) as { policySchema: { properties: Record<string, unknown> } };
    const changed = { ...policySchema, properties: { ...policySchema.properties, mode: { enum: ['enforce'] } } };
    expect(generate(changed)).not.toBe(readFileSync(join(ROOT, 'src/policy/policy-validator.ts'), 'utf8'));
  });

  it('refuses what the schema refuses, with ajv error objects load.ts turns into lines', async () => {
    const { validateShape } = (await import(join(ROOT, 'dist/policy/schema.js'))) as { validateShape: (d: unknown) => { instancePath: string; keyword: string }[] };
    expect(validateShape({ version: 1 })).toEqual([]);
    const errs = validateShape({ version: 2, mode: 'x', rules: [{ name: 'r', action: 'allow', extra: 1 }] });
    expect(errs.map((e) => `${e.instancePath} ${e.keyword}`).sort()).toEqual(['/mode enum', '/rules/0 additionalProperties', '/version const']);
  });
});
