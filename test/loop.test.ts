import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRun } from '../src/client';
import { openStore } from '../src/store/open';
import { progressQuery } from '../src/workflows';
import { saveReport } from '../src/cli/reports';
import type { DecisionRecord } from '../src/schemas/results';
import type { Progress } from '../src/schemas/run';
import { startFakeModel, stableHash, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

describe('the self-learning loop on a real Temporal dev server', () => {
  const dir = tempDir();
  const world = makeWorld(40);
  const held = paraphrases(world.slice(0, 20));
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

  it('answers, grades, filters, trains on the unknown items only, evaluates on held-out items and promotes', async () => {
    writeWorld(dir, world, held);
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
    const result = await handle.result();
    await waitFor(() => seen.at(-1)?.stage === 'done', 10_000, 'progress to say done');
    await watcher;

    const unknown = world.length - knownIds.size;
    expect(knownIds.size).toBeGreaterThan(5);
    expect(unknown).toBeGreaterThan(5);
    expect(result.counts).toEqual({ items: 40, answered: 40, graded: 40, known: knownIds.size, unknown, ungradeable: 0 });
    expect(result.levels).toEqual({ known: knownIds.size, maybeKnown: 0, weaklyKnown: 0, unknown });
    expect(result.filter).toMatchObject({ kept: unknown, dropped: knownIds.size, ungradeable: 0, replayed: 0 });

    const store = await openStore(result.store);
    // The training set is exactly the unknown items, as OpenAI chat JSONL.
    const trainSet = await store.jsonlAll<{ messages: { role: string; content: string }[] }>(result.filter!.trainSet);
    expect(trainSet.map((r) => r.messages.at(-1)!.content).sort()).toEqual(
      world
        .filter((w) => !knownIds.has(w.id))
        .map((w) => w.answer)
        .sort(),
    );
    expect(trainSet[0].messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);

    // One decision per item, each with its level and reason.
    const decisions = await store.jsonlAll<DecisionRecord>(result.filter!.decisions);
    expect(decisions).toHaveLength(40);
    for (const d of decisions) {
      expect(d.decision).toBe(knownIds.has(d.id) ? 'dropped' : 'kept');
      expect(d.level).toBe(knownIds.has(d.id) ? 'known' : 'unknown');
      expect(d.why).toMatch(knownIds.has(d.id) ? /^known/ : /^unknown/);
      expect(d.answers).toHaveLength(1);
    }

    // Evaluation on the held-out paraphrases: the base knows what it knew, the tuned adapter everything.
    const heldKnown = world.slice(0, 20).filter((w) => knownIds.has(w.id)).length;
    expect(result.train).toMatchObject({ skipped: false, resumedFromStep: 0 });
    expect(result.train!.steps).toBe(Math.ceil(unknown / 4) * 2);
    expect(result.train!.runtime).toMatchObject({ device: 'cpu', precision: 'fp32' });
    expect(result.evaluation!.base).toMatchObject({ correct: heldKnown, total: 20 });
    expect(result.evaluation!.tuned).toMatchObject({ correct: 20, total: 20 });
    expect(result.evaluation!.vsReference).toMatchObject({ a: 'base', b: 'tuned', fixed: 20 - heldKnown, broken: 0 });
    expect(result.evaluation!.vsReference!.pValue).toBeLessThan(0.05);
    // Retention: half the known items (the config's fixed retention set), asked again after tuning, are all still right.
    const retained = Math.floor(knownIds.size / 2);
    expect(result.evaluation!.retention).toMatchObject({ correct: retained, total: retained });
    expect(result.evaluation!.tunedModel).toMatch(/^slearn-[0-9a-f]{16}$/);
    expect(result.promotion).toMatchObject({ promoted: true, version: 1 });
    expect(result.promotion!.reason).toMatch(/^promoted: tuned 100\.0% vs base/);

    // Progress went through the stages and ended with every shard done.
    expect(new Set(seen.map((p) => p.stage)).has('done')).toBe(true);
    expect(seen.at(-1)).toMatchObject({ shardsDone: 6, shardsTotal: 6, counts: result.counts });

    // Every fact was asked once to answer; its held-out paraphrase once per model (base, tuned); the
    // known ones in the retention set once more. (The fake counts a paraphrase under the fact it asks about.)
    const isHeld = new Set(world.slice(0, 20).map((w) => w.id));
    const retentionIds = new Set((await store.jsonlAll<{ id: string }>(result.filter!.retention)).map((i) => i.id));
    expect(retentionIds.size).toBe(retained);
    for (const id of retentionIds) expect(knownIds.has(id)).toBe(true);
    for (const w of world) expect(fake.stats.perQuestion.get(w.question)).toBe(1 + (retentionIds.has(w.id) ? 1 : 0) + (isHeld.has(w.id) ? 2 : 0));

    // The report is in the store and is copied where people look.
    const html = await saveReport(result, join(dir, 'report'));
    expect(html && existsSync(html)).toBe(true);
    expect(readFileSync(join(dir, 'report', 'report.md'), 'utf8')).toContain('promoted');
  });

  it('returns the recorded result when a finished run is started again with the same id and input', async () => {
    const before = fake.stats.chat;
    const again = await startRun(server.client, join(dir, 'slearn.yaml'), { runId: 'loop-run' });
    const result = await again.result();
    expect(result.counts.items).toBe(40);
    expect(result.promotion).toMatchObject({ promoted: true, version: 1 });
    expect(fake.stats.chat - before).toBe(0);
  });
});
