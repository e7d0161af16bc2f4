import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRun } from '../src/client';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, waitFor, workerProcess, type WorkerProcess, inProcessWorker } from './support/stack';
import { expectSameOutputs, makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const N = 160;
const CHUNK = 4;
const SHARDS_IN_FLIGHT = 2;
const STEP_MS = '120';

function kill(w: WorkerProcess) {
  w.proc.kill('SIGKILL');
  return w.exited;
}

describe('a worker SIGKILLed while answering and while training', () => {
  const world = makeWorld(N);
  const held = paraphrases(world.slice(0, 20));
  let server: Awaited<ReturnType<typeof temporal>>;
  const serverDir = tempDir();
  const settings = (baseUrl: string) => ({
    shardSize: 20,
    shardConcurrency: SHARDS_IN_FLIGHT,
    answer: { concurrency: 4, chunkSize: CHUNK, maxTokens: 16 },
    train: { epochs: 6, saveSteps: 2 },
    model: { baseUrl, name: 'fake-model', timeoutSeconds: 5 },
  });

  beforeAll(async () => {
    server = await temporal(serverDir);
  });
  afterAll(async () => {
    await server.stop();
  });

  /** The same run with no faults, in-process, for the outputs (and the requests) to compare against. */
  async function reference(): Promise<{ result: RunResult; needed: Map<string, number> }> {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50 });
    const stop = await inProcessWorker(server.address);
    try {
      writeWorld(dir, world, held);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, settings(fake.baseUrl)), { runId: 'crash-reference' });
      return { result: await h.result(), needed: new Map(fake.stats.perQuestion) };
    } finally {
      await stop();
      await fake.close();
    }
  }

  it('completes with the same outputs, redoing at most one chunk per shard in flight per kill, and resumes training from a checkpoint', async () => {
    const ref = await reference();

    const dir = tempDir();
    const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 40 });
    writeWorld(dir, world, held);
    const configFile = writeConfig(dir, fake.baseUrl, settings(fake.baseUrl));
    // The worker restarts on the same host: the same scratch disk. Its trainer is one that is stuck
    // in a long step and does not notice its worker died (FAKE_TRAINER_IGNORE_EPIPE).
    const scratch = tempDir('slearn-crash-scratch-');
    const log = join(dir, 'trainers.log');
    const env = { FAKE_TRAINER_STEP_MS: STEP_MS, FAKE_TRAINER_IGNORE_EPIPE: '1', FAKE_TRAINER_LOG: log, SLEARN_SCRATCH: scratch };
    const runId = 'crash-run';
    const checkpoints = () => {
      const train = join(scratch, 'train');
      return existsSync(train) && readdirSync(train).some((d) => readdirSync(join(train, d)).some((f) => /^checkpoint-\d+$/.test(f)));
    };
    let w = workerProcess(server.address, env);
    const workers = [w];
    try {
      await w.ready;
      const handle = await startRun(server.client, configFile, { runId, heartbeatTimeout: '3 seconds' });

      // Kill 1: in the middle of answering.
      await waitFor(() => fake.stats.chat >= 50, 60_000, 'answering to be under way');
      await kill(w);
      const askedAtKill1 = fake.stats.chat;
      w = workerProcess(server.address, env);
      workers.push(w);
      await w.ready;

      // Kill 2: after the trainer wrote its first checkpoint.
      await waitFor(checkpoints, 120_000, 'a training checkpoint');
      await kill(w);
      w = workerProcess(server.address, env);
      workers.push(w);
      await w.ready;

      const result = await handle.result();
      expect(askedAtKill1).toBeLessThan(N);

      // Same outputs as the uninterrupted run.
      expectSameOutputs(result, ref.result);

      // Each question: what the uninterrupted run asked, plus at most one redo.
      let redone = 0;
      for (const q of world) {
        const asked = fake.stats.perQuestion.get(q.question) ?? 0;
        const needed = ref.needed.get(q.question) ?? 0;
        expect(asked).toBeGreaterThanOrEqual(needed);
        expect(asked).toBeLessThanOrEqual(needed + 1);
        redone += asked - needed;
      }
      // One kill while answering, losing at most the unflushed window of each shard in flight.
      expect(redone).toBeLessThanOrEqual(SHARDS_IN_FLIGHT * CHUNK);

      // The trainer picked up from its checkpoint, and never ran twice at once.
      expect(result.train!.resumedFromStep).toBeGreaterThan(0);
      const runs = readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { pid: number; event: string; t: number; signal?: string });
      const starts = runs.filter((r) => r.event === 'start');
      expect(starts.length).toBeGreaterThanOrEqual(2);
      // Each trainer exited (or was stopped by the lease takeover) before the next one started.
      let alive = 0;
      let most = 0;
      for (const r of [...runs].sort((a, b) => a.t - b.t)) {
        alive += r.event === 'start' ? 1 : -1;
        most = Math.max(most, alive);
      }
      expect(most).toBe(1);
      expect(runs.filter((r) => r.event === 'exit')).toHaveLength(starts.length);
      // The orphan of the killed worker kept training until the retry's takeover stopped it.
      expect(runs.some((r) => r.event === 'exit' && r.signal === 'SIGTERM')).toBe(true);
    } finally {
      for (const x of workers) x.proc.kill('SIGKILL');
      await fake.close();
    }
  });
});
