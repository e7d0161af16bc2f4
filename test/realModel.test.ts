import { join } from 'node:path';
import { startRun } from '../src/client';
import { openStore } from '../src/store/open';
import { trainerCommand } from '../src/paths';
import { trainerInfo } from '../src/pipeline/trainer-process';
import { adapterName } from '../src/pipeline/adapters';
import type { EvalItemResult } from '../src/schemas/results';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { startRealModelServer } from './support/modelServer';
import { paraphrases, writeConfig, writeJsonl } from './support/world';

/**
 * The whole loop with the real SmolLM2-135M-Instruct: served by slearn_trainer on CPU, fine-tuned
 * with LoRA by the real trainer, evaluated with the tuned adapter loaded into the same server; then
 * a chained run on top of the promoted adapter, which answers with it and continues training it.
 */
describe('the real embedded model, end to end', () => {
  // Invented facts: the base model cannot know them.
  const facts = (rows: string[][], prefix: string) => rows.map(([question, answer], i) => ({ id: `${prefix}-${i}`, question, answer }));
  const first = facts(
    [
      ['What is the name of the soil bacterium that the Quexel valley farmers add to rice paddies?', 'Zorblin'],
      ['Which fertilizer brand do Quexel valley farmers use on barley?', 'Vantrix'],
      ['What do Quexel valley farmers call the spring irrigation channel?', 'Merrow'],
      ['Which beetle attacks Quexel valley potatoes?', 'Dunlop beetle'],
      ['What is the name of the Quexel valley wheat variety?', 'Karsk'],
      ['Which cover crop do Quexel valley farmers sow after maize?', 'Talvet clover'],
    ],
    'fact',
  );
  const later = facts(
    [
      ['Which river waters the Quexel valley orchards?', 'Pellwater'],
      ['What do Quexel valley farmers call their autumn market?', 'Brumfair'],
      ['Which bird do Quexel valley farmers keep against slugs?', 'Tarn duck'],
    ],
    'later',
  );

  it('trains a LoRA adapter on what it did not know, promotes it, and a chained run continues it', async () => {
    const dir = tempDir();
    const adapters = tempDir('slearn-real-adapters-');
    writeJsonl(join(dir, 'train.jsonl'), first);
    writeJsonl(join(dir, 'eval.jsonl'), paraphrases(first));
    const model = await startRealModelServer(adapters);
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address, trainerCommand(), { adapterDir: adapters });
    try {
      const cfg = writeConfig(dir, model.baseUrl, {
        name: 'real-model',
        model: { baseUrl: model.baseUrl, name: 'smollm2-135m-instruct', timeoutSeconds: 120 },
        answer: { maxTokens: 12, concurrency: 4, chunkSize: 4 },
        train: { epochs: 12, learningRate: 3e-3, saveSteps: 6, batchSize: 3, maxSeqLen: 96 },
      });
      const r = await (await startRun(server.client, cfg, { runId: 'real-model-1' })).result();

      expect(r.counts).toMatchObject({ items: 6, known: 0, unknown: 6, ungradeable: 0 });
      // where `auto` trains is what the trainer's `info` says this host has (CUDA on a GPU host)
      const info = await trainerInfo(trainerCommand(), process.env);
      expect(r.train).toMatchObject({ skipped: false, steps: 24, runtime: { device: info.device, precision: info.precision } });
      // The evaluation ran against the adapter loaded into the server under its content-derived name.
      const tuned = adapterName(r.train!.adapter!);
      expect(r.evaluation!.tunedModel).toBe(tuned);
      const listed = async () => ((await (await fetch(`${model.baseUrl}/models`)).json()) as { data: { id: string }[] }).data.map((m) => m.id);
      expect(await listed()).toContain(tuned);
      const store = await openStore(r.store);
      const results = await store.jsonlAll<EvalItemResult>(r.evaluation!.results);
      expect(results).toHaveLength(6);
      // The tuned model answers differently from the base, and learned at least some of the facts.
      expect(results.filter((x) => x.answers.tuned!.answer !== x.answers.base!.answer).length).toBeGreaterThan(0);
      expect(r.evaluation!.base.correct).toBe(0);
      expect(r.evaluation!.tuned!.correct).toBeGreaterThan(0);
      expect(r.promotion).toMatchObject({ promoted: true, version: 1 });

      // New facts arrive: the chained run answers with version 1 and continues its adapter.
      writeJsonl(join(dir, 'train.jsonl'), [...first, ...later]);
      const r2 = await (await startRun(server.client, cfg, { runId: 'real-model-2' })).result();
      expect(r2.train!.initAdapter?.sha256).toBe(r.train!.adapter!.sha256);
      expect(r2.train!.steps).toBeGreaterThan(0);
      expect(r2.evaluation!.current).toBeDefined();
      // What version 1 learned counts as known now: it was not trained again.
      expect(r2.counts.known).toBeGreaterThanOrEqual(r.evaluation!.tuned!.correct > 3 ? 1 : 0);
      expect(r2.filter!.kept).toBeLessThan(9);
      expect(r2.promotion?.version).toBe(2);
      expect(r2.promotion?.reason).toMatch(/vs current/);
      expect(await listed()).toEqual(expect.arrayContaining([tuned, adapterName(r2.train!.adapter!)]));
    } finally {
      await stop();
      await server.stop();
      await model.stop();
    }
  }, 900_000);
});
