import type { RunResult } from '../../src/schemas/run';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';

/** A synthetic domain: questions whose answers the fake endpoint knows, and a config for it. */
export function makeWorld(n: number, prefix = 'q') {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${String(i).padStart(5, '0')}`,
    question: `What is the code word number ${i} of the test domain?`,
    answer: `word${i}`,
    aliases: [`w${i}`],
  }));
}

/** Held-out items that ask about `world`'s facts in other words (the fake model finds the fact inside). */
export function paraphrases(world: { question: string; answer: string; aliases?: string[] }[], prefix = 'e') {
  return world.map((w, i) => ({
    id: `${prefix}-${String(i).padStart(5, '0')}`,
    question: `Quick check. ${w.question}`,
    answer: w.answer,
    ...(w.aliases ? { aliases: w.aliases } : {}),
  }));
}

export function writeJsonl(file: string, rows: unknown[]): string {
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

export function writeConfig(dir: string, baseUrl: string, overrides: Record<string, unknown> = {}): string {
  const config = {
    name: 'test-run',
    dataset: 'train.jsonl',
    model: { baseUrl, name: 'fake-model', timeoutSeconds: 5 },
    eval: 'eval.jsonl',
    answer: { samples: 1, temperature: 0, maxTokens: 16, concurrency: 4, chunkSize: 4 },
    grader: { type: 'match' },
    train: { epochs: 2, saveSteps: 2 },
    shardSize: 8,
    shardConcurrency: 2,
    artifacts: './artifacts',
    ...overrides,
  };
  const file = join(dir, 'slearn.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

/** A dataset and a held-out file of the same synthetic domain, written beside the config. */
export function writeWorld(dir: string, train: unknown[], evalItems: unknown[]): void {
  writeJsonl(join(dir, 'train.jsonl'), train);
  writeJsonl(join(dir, 'eval.jsonl'), evalItems);
}

/** What "the same outputs as an uninterrupted run" means: same counts, training set, decisions and evaluation. */
export function expectSameOutputs(result: RunResult, ref: RunResult): void {
  expect(result.counts).toEqual(ref.counts);
  expect(result.filter!.trainSet.sha256).toBe(ref.filter!.trainSet.sha256);
  expect(result.filter!.decisions.sha256).toBe(ref.filter!.decisions.sha256);
  expect(result.evaluation!.base).toEqual(ref.evaluation!.base);
  expect(result.evaluation!.tuned).toEqual(ref.evaluation!.tuned);
  expect(result.train!.steps).toBe(ref.train!.steps);
}
