import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRun } from '../src/client';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, waitFor, workerProcess, type WorkerProcess, inProcessWorker } from './support/stack';
import { expectSameOutputs, makeWorld, writeConfig, writeJsonl } from './support/world';

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
  let server: Awaited<ReturnType<typeof temporal>>;
  const serverDir = tempDir();

  beforeAll(async () => {
    server = await temporal(serverDir);
  });
  afterAll(async () => {
    await server.stop();
  });

  /** The same run with no faults, in-process, for the outputs to compare against. */
  async function reference(): Promise<RunResult> {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50 });
    const stop = await inProcessWorker(server.address);
    try {
      writeJsonl(join(dir, 'train.jsonl'), world);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, { shardSize: 20, shardConcurrency: SHARDS_IN_FLIGHT, train: { epochs: 6, saveSteps: 2 } }), { runId: 'crash-reference' });
      return (await h.result()) as RunResult;
    } finally {
      await stop();
      await fake.close();
    }
  }

  it('completes with the same outputs, redoing at most one chunk per shard in flight per kill, and resumes training from a checkpoint', async () => {
    const ref = await reference();

    const dir = tempDir();
    const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 40 });
    writeJsonl(join(dir, 'train.jsonl'), world);
    const configFile = writeConfig(dir, fake.baseUrl, { shardSize: 20, shardConcurrency: SHARDS_IN_FLIGHT, train: { epochs: 6, saveSteps: 2 } });
    const env = { FAKE_TRAINER_STEP_MS: STEP_MS, FAKE_TRAINER_IGNORE_EPIPE: '1' };
    const runId = 'crash-run';
    const trainDir = join(dir, 'artifacts', 'runs', runId, 'train');
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
      await waitFor(() => existsSync(trainDir) && readdirSync(trainDir).some((f) => /^checkpoint-\d+$/.test(f)), 120_000, 'a training checkpoint');
      await kill(w);
      w = workerProcess(server.address, env);
      workers.push(w);
      await w.ready;

      const result = (await handle.result()) as RunResult;
      expect(askedAtKill1).toBeLessThan(N);

      // Same outputs as the uninterrupted run.
      expectSameOutputs(result, ref);

      // Each question: once to answer, once per evaluation pass, plus at most one redo.
      const needed = 3;
      let redone = 0;
      for (const q of world) {
        const asked = fake.stats.perQuestion.get(q.question) ?? 0;
        expect(asked).toBeGreaterThanOrEqual(needed);
        expect(asked).toBeLessThanOrEqual(needed + 1);
        redone += asked - needed;
      }
      // Two kills, each losing at most the unflushed chunk of each shard in flight.
      expect(redone).toBeLessThanOrEqual(2 * SHARDS_IN_FLIGHT * CHUNK);

      // The trainer picked up from its checkpoint, and never ran twice at once.
      expect(result.train.resumedFromStep).toBeGreaterThan(0);
      expect(existsSync(join(dir, 'artifacts', 'runs', runId, 'fake-trainer-violations.log'))).toBe(false);
      const runs = readFileSync(join(trainDir, 'fake-trainer-runs.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { pid: number; event: string; t: number });
      const starts = runs.filter((r) => r.event === 'start');
      expect(starts.length).toBeGreaterThanOrEqual(2);
      // Each trainer exited (or was stopped by the lock's takeover) before the next one started.
      let alive = 0;
      let most = 0;
      for (const r of [...runs].sort((a, b) => a.t - b.t)) {
        alive += r.event === 'start' ? 1 : -1;
        most = Math.max(most, alive);
      }
      expect(most).toBe(1);
      expect(runs.filter((r) => r.event === 'exit')).toHaveLength(starts.length);
      // The orphan of the killed worker kept training until the retry's lock takeover stopped it.
      expect(runs.some((r) => r.event === 'exit' && (r as { signal?: string }).signal === 'SIGTERM')).toBe(true);
    } finally {
      for (const x of workers) x.proc.kill('SIGKILL');
      await fake.close();
    }
  });
});
