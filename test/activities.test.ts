import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { CancelledFailure } from '@temporalio/common';
import { ArtifactStore } from '../src/artifacts/store';
import { loadConfig } from '../src/config';
import { prepare } from '../src/activities/prepare';
import { answerShard, gradeShard } from '../src/activities/shards';
import { filter } from '../src/activities/filter';
import { makeTrain } from '../src/activities/train';
import { isAlive } from '../src/activities/trainer-process';
import type { ChunkProgress } from '../src/activities/chunks';
import type { PreparedRef, TrainProgress } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { FAKE_TRAINER, tempDir, waitFor } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

/** MockActivityEnvironment.run with the activity's own types. */
function run<A extends unknown[], R>(env: MockActivityEnvironment, fn: (...a: A) => Promise<R>, ...args: A): Promise<R> {
  return env.run(fn as any, ...(args as any[])) as Promise<R>;
}

describe('activities in MockActivityEnvironment', () => {
  const dir = tempDir();
  const world = makeWorld(24);
  let fake: FakeModel;
  let prepared: PreparedRef;
  let store: ArtifactStore;

  async function prep(overrides: Record<string, unknown> = {}, runId = 'unit') {
    writeJsonl(join(dir, 'train.jsonl'), world);
    const { config } = loadConfig(writeConfig(dir, fake.baseUrl, { shardSize: 12, ...overrides }));
    return prepare({ config, configFile: join(dir, 'slearn.yaml'), artifactRoot: join(dir, 'artifacts'), runId });
  }

  beforeAll(async () => {
    fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 5 });
    prepared = await prep();
    store = new ArtifactStore(join(dir, 'artifacts'));
  });
  afterAll(() => fake.close());

  it('answerShard heartbeats its flushed chunks and returns a reference, not data', async () => {
    const env = new MockActivityEnvironment();
    const beats: ChunkProgress[] = [];
    env.on('heartbeat', (d: ChunkProgress) => beats.push(d));
    const r = await run(env, answerShard, { ctx: prepared.ctx, shard: 0 });
    expect(r.answers.count).toBe(12);
    expect(r.counts).toMatchObject({ answered: 12, ungradeable: 0 });
    expect(beats.map((b) => b.chunksDone)).toEqual([1, 2, 3]);
    expect(beats.at(-1)).toMatchObject({ chunksTotal: 3, itemsDone: 12, resumedAtChunk: 0 });
  });

  it('a retried shard resumes from its heartbeat details and flushed chunks, re-asking nothing already flushed', async () => {
    const ctx = (await prep({ shardSize: 12 }, 'unit-resume')).ctx;
    await run(new MockActivityEnvironment(), answerShard, { ctx, shard: 1 });
    // Simulate a crash after two chunks: the step record and the third chunk are gone.
    const work = store.runDir('unit-resume', 'work', 'answer-000001');
    rmSync(store.runDir('unit-resume', 'steps', 'answer-000001.json'));
    rmSync(join(work, readdirSync(work).sort()[2]));
    const before = fake.stats.chat;
    const env = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: { phase: 'answer-000001', chunksDone: 2, chunksTotal: 3, itemsDone: 8, resumedAtChunk: 0 } });
    const beats: ChunkProgress[] = [];
    env.on('heartbeat', (d: ChunkProgress) => beats.push(d));
    const r = await run(env, answerShard, { ctx, shard: 1 });
    expect(fake.stats.chat - before).toBe(4);
    expect(r.answers.count).toBe(12);
    expect(beats).toEqual([{ phase: 'answer-000001', chunksDone: 3, chunksTotal: 3, itemsDone: 12, resumedAtChunk: 2 }]);
  });

  it('refuses to resume when heartbeat details and the store disagree (store not shared)', async () => {
    const ctx = (await prep({ shardSize: 12 }, 'unit-mismatch')).ctx;
    const env = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: { phase: 'answer-000000', chunksDone: 2, chunksTotal: 3, itemsDone: 8, resumedAtChunk: 0 } });
    await expect(run(env, answerShard, { ctx, shard: 0 })).rejects.toThrow(/artifact store shared/);
  });

  it('a finished step returns its recorded result without calling the model', async () => {
    const before = fake.stats.chat;
    const r = await run(new MockActivityEnvironment(), answerShard, { ctx: prepared.ctx, shard: 0 });
    expect(r.answers.count).toBe(12);
    expect(fake.stats.chat).toBe(before);
  });

  it('gradeShard and filter split known from unknown with a reason per item', async () => {
    for (const shard of [0, 1]) {
      const a = await run(new MockActivityEnvironment(), answerShard, { ctx: prepared.ctx, shard });
      await run(new MockActivityEnvironment(), gradeShard, { ctx: prepared.ctx, shard, answers: a.answers });
    }
    const f = await run(new MockActivityEnvironment(), filter, { ctx: prepared.ctx, shards: 2 });
    expect(f.kept + f.dropped).toBe(24);
    expect(f.trainSet.count).toBe(f.kept);
  });

  it('train heartbeats step and loss, and cancellation stops the trainer process group', async () => {
    const ctx = (await prep({ train: { epochs: 50, saveSteps: 5 } }, 'unit-train')).ctx;
    for (const shard of [0, 1]) {
      const a = await run(new MockActivityEnvironment(), answerShard, { ctx, shard });
      await run(new MockActivityEnvironment(), gradeShard, { ctx, shard, answers: a.answers });
    }
    const f = await run(new MockActivityEnvironment(), filter, { ctx, shards: 2 });
    process.env.FAKE_TRAINER_STEP_MS = '50';
    const env = new MockActivityEnvironment();
    const beats: TrainProgress[] = [];
    env.on('heartbeat', (d: TrainProgress) => beats.push(d));
    const train = makeTrain({ trainerCommand: FAKE_TRAINER });
    const running = run(env, train, { ctx, trainSet: f.trainSet });
    await waitFor(() => beats.some((b) => b.step >= 3 && typeof b.loss === 'number'), 30_000, 'training progress heartbeats');
    const lock = join(store.runDir('unit-train', 'train'), '.slearn-train.lock');
    const trainerPid = JSON.parse(require('node:fs').readFileSync(lock, 'utf8')).trainerPid as number;
    expect(isAlive(trainerPid)).toBe(true);
    const t0 = Date.now();
    env.cancel();
    await expect(running).rejects.toBeInstanceOf(CancelledFailure);
    expect(isAlive(trainerPid)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(existsSync(lock)).toBe(false);
    delete process.env.FAKE_TRAINER_STEP_MS;
  });
});
