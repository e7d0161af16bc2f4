/**
 * One schema per concept, written once: the config's JSON Schema, the README's configuration
 * reference and the trainer contract (contract.json) are generated from the zod schemas and
 * committed; this test fails when any of them drifts (`npm run schemas` regenerates them).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { generatedFiles } from '../src/schemas/generated';
import { loadConfig } from '../src/config';
import { ConfigSchema } from '../src/schemas/config';
import { TrainArgsSchema, TrainerEventSchema, trainArgv } from '../src/schemas/trainer';
import { ROOT } from './support/stack';

describe('generated files', () => {
  it.each(Object.entries(generatedFiles()).map(([f, t]) => [relative(ROOT, f), t]))('%s matches what `npm run schemas` writes', (file, text) => {
    expect(readFileSync(join(ROOT, file), 'utf8')).toBe(text);
  });

  it('every example config names the committed schema for editors, and validates', () => {
    const dir = join(ROOT, 'examples');
    for (const sub of readdirSync(dir)) {
      for (const f of readdirSync(join(dir, sub)).filter((n) => n.endsWith('.yaml'))) {
        const text = readFileSync(join(dir, sub, f), 'utf8');
        expect(text.split('\n')[0]).toBe('# yaml-language-server: $schema=../../schema/slearn.schema.json');
        expect(() => loadConfig(join(dir, sub, f), { checkKeys: false })).not.toThrow();
      }
    }
  });

  it('the JSON Schema refuses what the zod schema refuses (an unknown key) and names every top-level key', () => {
    const schema = JSON.parse(readFileSync(join(ROOT, 'schema', 'slearn.schema.json'), 'utf8'));
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(ConfigSchema.shape).sort());
  });
});

describe('the trainer contract', () => {
  it('builds argv with the flags the contract spells, and only those', () => {
    const argv = trainArgv(TrainArgsSchema.parse({ base: 'b', data: 'd.jsonl', out: 'o', learningRate: 1e-3, packing: true }));
    const contract = JSON.parse(readFileSync(join(ROOT, 'trainer', 'slearn_trainer', 'contract.json'), 'utf8'));
    const flags = new Set(Object.values(contract.train.properties as Record<string, { flag: string }>).map((p) => p.flag));
    for (const a of argv.filter((x) => x.startsWith('--'))) expect(flags.has(a)).toBe(true);
    expect(argv.slice(0, 7)).toEqual(['train', '--base', 'b', '--data', 'd.jsonl', '--out', 'o']);
    expect(argv).toContain('--packing');
    expect(argv[argv.indexOf('--lr') + 1]).toBe('0.001');
  });

  it('parses the events the contract defines and refuses others', () => {
    expect(TrainerEventSchema.safeParse({ event: 'start', total_steps: 10, resumed_from_step: 0, device: 'cuda', precision: 'bf16' }).success).toBe(true);
    expect(TrainerEventSchema.safeParse({ event: 'done', adapter: 'a', steps: 3, train_seconds: 1.5, tokens_per_second: 900 }).success).toBe(true);
    expect(TrainerEventSchema.safeParse({ event: 'start', total_steps: 10 }).success).toBe(false);
    expect(TrainerEventSchema.safeParse({ event: 'progress', step: -1, total_steps: 10 }).success).toBe(false);
  });
});
