/**
 * Baselines on the same answered items, end to end against the deterministic endpoint: `full`
 * trains on every gradeable item, `random` on a seeded subset of the same size as self-learning's
 * training set; all are evaluated on the same held-out items with a paired (McNemar) test, training
 * time and retention, and none is ever promoted.
 */
import { startRun } from '../src/client';
import { baselineFor, comparison } from '../src/cli/compare';
import { renderComparison } from '../src/report/render';
import { openStore } from '../src/store/open';
import type { DecisionRecord } from '../src/schemas/results';
import { Registry } from '../src/registry/registry';
import { startFakeModel, stableHash, type FakeModel } from './support/fakeModel';
import { inProcessWorker, temporal, tempDir } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

describe('self-learning against the full and random baselines', () => {
  const world = makeWorld(48);
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(tempDir());
    stop = await inProcessWorker(server.address);
  });
  afterAll(async () => {
    await stop?.();
    await server?.stop();
    await fake?.close();
  });

  it('trains the baselines on the same answers, compares them item by item, and promotes none of them', async () => {
    const dir = tempDir();
    // Held out: paraphrases of 24 of the facts, half of which the base knows.
    writeWorld(dir, world, paraphrases(world.slice(0, 24)));
    const cfg = writeConfig(dir, fake.baseUrl, { name: 'compare', train: { epochs: 2, saveSteps: 10 } });
    const self = await (await startRun(server.client, cfg, { runId: 'cmp-self' })).result();
    const asked = fake.stats.chat;

    const runBaseline = async (kind: 'full' | 'random') =>
      await (await startRun(server.client, cfg, { runId: `cmp-${kind}`, reuseFrom: [self.runId], baseline: baselineFor(kind, self) })).result();
    const full = await runBaseline('full');
    const random = await runBaseline('random');

    // The baselines reuse the answers and grades: only their own tuned model was asked anything.
    const perPass = 24 + (self.evaluation!.retention?.total ?? 0);
    expect(fake.stats.chat - asked).toBe(2 * perPass);

    const known = world.filter((w) => stableHash(w.question) % 100 < 50).length;
    expect(self.filter!.kept).toBe(48 - known);
    // Half the known items are the config's fixed retention set: no run trains on them, the baselines neither.
    const held = self.evaluation!.retention!.total;
    expect(held).toBe(Math.floor(known / 2));
    expect(full.filter!.kept).toBe(48 - held);
    expect(random.filter!.kept).toBe(self.filter!.kept);
    // The random subset is a seeded draw over every item, not the unknown ones.
    const store = await openStore(self.store);
    const randomKept = (await store.jsonlAll<DecisionRecord>(random.filter!.decisions)).filter((d) => d.decision === 'kept');
    const selfKept = new Set((await store.jsonlAll<DecisionRecord>(self.filter!.decisions)).filter((d) => d.decision === 'kept').map((d) => d.id));
    expect(randomKept.some((d) => !selfKept.has(d.id))).toBe(true);
    expect(randomKept.every((d) => d.why.startsWith('random baseline: selected'))).toBe(true);

    // Same held-out items and the same retention set for all three.
    for (const r of [full, random]) {
      expect(r.evaluation!.items).toBe(self.evaluation!.items);
      expect(r.evaluation!.base).toEqual(self.evaluation!.base);
      expect(r.evaluation!.retention?.total).toBe(self.evaluation!.retention?.total);
      expect(r.filter!.retention.sha256).toBe(self.filter!.retention.sha256);
      expect(r.promotion).toMatchObject({ promoted: false, reason: expect.stringMatching(/baseline run: compared, never promoted/) });
    }
    expect((await new Registry(store, 'compare').versions()).map((v) => v.runId)).toEqual(['cmp-self']);

    // A variant: the known items not in the retention set replayed late (KnownPatch), in a set of their own.
    const late = await (
      await startRun(server.client, cfg, {
        runId: 'cmp-late',
        reuseFrom: [self.runId],
        baseline: { kind: 'variant', label: 'replay late' },
        overrides: { filter: { replayFraction: 1, replayWhen: 'late' } },
      })
    ).result();
    expect(late.filter).toMatchObject({ kept: self.filter!.kept, replayed: known - held });
    expect(late.filter!.lateSet?.count).toBe(known - held);
    expect(late.filter!.trainSet.count).toBe(self.filter!.kept);
    expect(late.train!.steps).toBeGreaterThan(self.train!.steps);
    expect(late.evaluation!.retention).toMatchObject({ correct: held, total: held });
    expect(late.promotion?.reason).toMatch(/a variant \(replay late\) run: compared, never promoted/);

    // Self-learning and full both learn every held-out fact; random misses what it did not draw.
    expect(self.evaluation!.tuned!.correct).toBe(24);
    expect(full.evaluation!.tuned!.correct).toBe(24);
    expect(random.evaluation!.tuned!.correct).toBeLessThan(24);

    const data = await comparison(self, [
      { label: 'full fine-tuning', result: full },
      { label: 'random subset', result: random },
    ]);
    expect(data.rows.map((r) => r.label)).toEqual(['self-learning', 'full fine-tuning', 'random subset']);
    expect(data.rows[1]).toMatchObject({ trainedItems: 48 - held, vsSelf: { fixed: 0, broken: 0, pValue: 1 } });
    const broken = 24 - random.evaluation!.tuned!.correct;
    expect(data.rows[2].vsSelf).toMatchObject({ fixed: 0, broken });
    expect(data.rows[2].vsSelf!.pValue).toBeCloseTo(Math.min(1, 2 * 0.5 ** broken), 6);
    expect(data.rows[1].steps).toBeGreaterThan(data.rows[0].steps);
    const page = renderComparison(data);
    expect(page.markdown).toMatch(/random subset/);
    expect(page.html).not.toMatch(/https?:\/\//);
  });
});
