import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRun } from '../src/client';
import { ArtifactStore } from '../src/artifacts/store';
import { progressQuery } from '../src/workflows';
import type { DecisionRecord } from '../src/activities/filter';
import type { Progress, RunResult } from '../src/schemas/run';
import { startFakeModel, stableHash, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

describe('the self-learning loop on a real Temporal dev server', () => {
  const dir = tempDir();
  const world = makeWorld(40);
  const knownIds = new Set(world.filter((w) => stableHash(w.question) % 100 < 50).map((w) => w.id));
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let stopWorker: () => Promise<void>;

  beforeAll(async () => {
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    stopWorker = await inProcessWorker(server.address);
  });

  afterAll(async () => {
    await stopWorker?.();
    await server.stop();
    await fake.close();
  });

  it('answers, grades, filters, trains on the unknown items only, and evaluates base vs tuned', async () => {
    writeJsonl(join(dir, 'train.jsonl'), world);
    const configFile = writeConfig(dir, fake.baseUrl);
    const handle = await startRun(server.client, configFile, { runId: 'loop-run' });

    // The progress query answers while the run is going.
    const seen: Progress[] = [];
    const watcher = (async () => {
      while (true) {
        try {
          seen.push(await handle.query(progressQuery));
        } catch {
          /* before the first workflow task */
        }
        if (seen.at(-1)?.stage === 'done') return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const result = (await handle.result()) as RunResult;
    await waitFor(() => seen.at(-1)?.stage === 'done', 10_000, 'progress to say done');
    await watcher;

    const unknown = world.length - knownIds.size;
    expect(knownIds.size).toBeGreaterThan(5);
    expect(unknown).toBeGreaterThan(5);
    expect(result.counts).toEqual({ items: 40, answered: 40, graded: 40, known: knownIds.size, unknown, ungradeable: 0 });
    expect(result.filter).toMatchObject({ kept: unknown, dropped: knownIds.size, ungradeable: 0, replayed: 0 });

    const store = new ArtifactStore(join(dir, 'artifacts'));
    // The training set is exactly the unknown items, as OpenAI chat JSONL.
    const trainSet = store.readJsonl<{ messages: { role: string; content: string }[] }>(result.filter.trainSet);
    expect(trainSet.map((r) => r.messages.at(-1)!.content).sort()).toEqual(world.filter((w) => !knownIds.has(w.id)).map((w) => w.answer).sort());
    expect(trainSet[0].messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);

    // One decision per item, each with its reason.
    const decisions = store.readJsonl<DecisionRecord>(result.filter.decisions);
    expect(decisions).toHaveLength(40);
    for (const d of decisions) {
      expect(d.decision).toBe(knownIds.has(d.id) ? 'dropped' : 'kept');
      expect(d.why).toMatch(knownIds.has(d.id) ? /^known/ : /^unknown/);
      expect(d.answers).toHaveLength(1);
    }

    // Evaluation: base knows half; the tuned adapter knows everything it was trained on.
    expect(result.train).toMatchObject({ skipped: false, resumedFromStep: 0 });
    expect(result.train.steps).toBe(Math.ceil(unknown / 4) * 2);
    expect(result.evaluation.base).toMatchObject({ correct: knownIds.size, total: 40 });
    expect(result.evaluation.tuned).toMatchObject({ correct: 40, total: 40 });
    expect(result.evaluation.fixed).toBe(unknown);
    expect(result.evaluation.base.low).toBeLessThan(result.evaluation.base.accuracy);
    expect(result.evaluation.tunedModel).toBe('slearn-loop-run');

    // Progress went through the stages and ended with every shard done.
    const stages = new Set(seen.map((p) => p.stage));
    expect(stages.has('done')).toBe(true);
    expect(seen.at(-1)).toMatchObject({ shardsDone: 5, shardsTotal: 5, counts: result.counts });

    // Every question was asked exactly once by the answer step and once more per evaluation pass.
    for (const w of world) expect(fake.stats.perQuestion.get(w.question)).toBe(3);

    expect(existsSync(join(result.report.dir, 'report.html'))).toBe(true);
    expect(readFileSync(join(result.report.dir, 'report.md'), 'utf8')).toContain(`| ${knownIds.size} | ${unknown} | 0 | 0 |`);
  });

  it('returns the recorded result when a finished step is asked again (idempotent activities)', async () => {
    const before = fake.stats.chat;
    const configFile = join(dir, 'slearn.yaml');
    // Same run id, same inputs: every step finds its record and the endpoint is not asked again.
    const again = await startRun(server.client, configFile, { runId: 'loop-run', checkEndpoint: true });
    const result = (await again.result()) as RunResult;
    expect(result.counts.items).toBe(40);
    expect(fake.stats.chat - before).toBe(0);
  });
});
