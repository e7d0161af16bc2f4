import { join } from 'node:path';
import { startRun } from '../src/client';
import { ArtifactStore } from '../src/artifacts/store';
import { trainerCommand } from '../src/paths';
import type { EvalItemResult } from '../src/activities/evaluate';
import type { RunResult } from '../src/schemas/run';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { startRealModelServer } from './support/modelServer';
import { writeConfig, writeJsonl } from './support/world';

/**
 * The whole loop with the real SmolLM2-135M-Instruct: served by slearn_trainer on CPU, fine-tuned
 * with LoRA by the real trainer, and evaluated with the tuned adapter loaded into the same server.
 */
describe('the real embedded model, end to end', () => {
  it('answers, trains a LoRA adapter on what it did not know, and evaluates with that adapter', async () => {
    const dir = tempDir();
    // Invented facts: the base model cannot know them, so every item is unknown and trained on.
    const facts = [
      ['What is the name of the soil bacterium that the Quexel valley farmers add to rice paddies?', 'Zorblin'],
      ['Which fertilizer brand do Quexel valley farmers use on barley?', 'Vantrix'],
      ['What do Quexel valley farmers call the spring irrigation channel?', 'Merrow'],
      ['Which beetle attacks Quexel valley potatoes?', 'Dunlop beetle'],
      ['What is the name of the Quexel valley wheat variety?', 'Karsk'],
      ['Which cover crop do Quexel valley farmers sow after maize?', 'Talvet clover'],
    ].map(([question, answer], i) => ({ id: `fact-${i}`, question, answer }));
    writeJsonl(join(dir, 'train.jsonl'), facts);
    const model = await startRealModelServer();
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address, trainerCommand());
    try {
      const cfg = writeConfig(dir, model.baseUrl, {
        model: { baseUrl: model.baseUrl, name: 'smollm2-135m-instruct', timeoutSeconds: 120 },
        answer: { samples: 1, temperature: 0, maxTokens: 12, concurrency: 4, chunkSize: 3 },
        train: { epochs: 12, learningRate: 3e-3, saveSteps: 6, extraArgs: ['--batch-size', '3', '--max-seq-len', '96'] },
      });
      const h = await startRun(server.client, cfg, { runId: 'real-model' });
      const r = (await h.result()) as RunResult;

      expect(r.counts).toMatchObject({ items: 6, known: 0, unknown: 6, ungradeable: 0 });
      expect(r.train.skipped).toBe(false);
      expect(r.train.steps).toBe(24);
      expect(r.train.adapter?.path).toMatch(/train\/adapter$/);

      // The evaluation ran against the adapter loaded into the server under the run's name.
      expect(r.evaluation.tunedModel).toBe('slearn-real-model');
      const models = (await (await fetch(`${model.baseUrl}/models`)).json()) as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).toContain('slearn-real-model');
      const results = new ArtifactStore(join(dir, 'artifacts')).readJsonl<EvalItemResult>(r.evaluation.results);
      expect(results).toHaveLength(6);
      // The tuned model answers differently from the base, and learned at least some of the facts.
      expect(results.filter((x) => x.tuned!.answer !== x.base.answer).length).toBeGreaterThan(0);
      expect(r.evaluation.base.correct).toBe(0);
      expect(r.evaluation.tuned!.correct).toBeGreaterThan(r.evaluation.base.correct);
    } finally {
      await stop();
      await server.stop();
      await model.stop();
    }
  }, 600_000);
});
