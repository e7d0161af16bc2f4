import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startRun } from '../src/client';
import { openStore } from '../src/store/open';
import { trainerCommand } from '../src/paths';
import { progressQuery } from '../src/workflows';
import type { DecisionRecord } from '../src/schemas/results';
import type { Progress } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, waitFor, workerProcess, type WorkerProcess, inProcessWorker } from './support/stack';
import { expectSameOutputs, makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

/**
 * `make chaos`: 2,000 items, the worker SIGKILLed ten times across every stage (answering, grading,
 * filtering, training with the real trainer on a tiny set, evaluating), restarted each time on the
 * same host (same scratch disk). The uninterrupted reference run goes on at the same time on a dev
 * server of its own, and a killed activity is noticed after an 8 s heartbeat timeout: the same kill
 * points as when the reference ran first and the timeout was 15 s, in about half the time.
 */
const N = 2000;
const HELD = 300;
const CHUNK = 10;
const SHARDS_IN_FLIGHT = 2;
/** Base, tuned and retention passes run side by side, each with its own window. */
const EVAL_PASSES = 3;
const TRAINER = trainerCommand();
/** How soon a killed worker's activity is retried (and a live one's heartbeats, every fourth of it, keep it alive). */
const HEARTBEAT_TIMEOUT = '8 seconds';

function settings(baseUrl: string) {
  return {
    shardSize: 100,
    shardConcurrency: SHARDS_IN_FLIGHT,
    answer: { samples: 1, temperature: 0, maxTokens: 16, concurrency: 5, chunkSize: CHUNK },
    // ~1% unknown: a tiny training set for the real trainer on CPU.
    train: { base: 'smollm2-135m-instruct', epochs: 3, learningRate: 1e-3, saveSteps: 2, batchSize: 2, maxSeqLen: 64 },
    model: { baseUrl, name: 'fake-model', timeoutSeconds: 10 },
  };
}

/** Trainer processes whose command line names this run's output directory. */
function trainersOn(outDir: string): number {
  try {
    return execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes('slearn_trainer') && l.includes(' train ') && l.includes(`${outDir}/train/chaos-`)).length;
  } catch {
    return 0;
  }
}

/**
 * The same run without faults, on a dev server and an in-process worker of its own (so it can go on
 * beside the chaos run): its result, and what it asked per question.
 */
async function referenceRun(world: ReturnType<typeof makeWorld>, held: ReturnType<typeof paraphrases>) {
  const server = await temporal(tempDir());
  const refDir = tempDir();
  const refFake = await startFakeModel({ items: world, knownPercent: 99 });
  const stopRef = await inProcessWorker(server.address, TRAINER);
  writeWorld(refDir, world, held);
  try {
    const ref = await (await startRun(server.client, writeConfig(refDir, refFake.baseUrl, settings(refFake.baseUrl)), { runId: 'chaos-ref' })).result();
    // What an uninterrupted run asks, per question: the yardstick for what the kills made us redo.
    return { ref, needed: new Map(refFake.stats.perQuestion) };
  } finally {
    await stopRef();
    await refFake.close();
    await server.stop();
  }
}

describe('chaos: ten SIGKILLs across all stages of a 2,000-item run', () => {
  it('completes with the outputs of an uninterrupted run, nothing lost, nothing duplicated, one trainer at a time', async () => {
    const world = makeWorld(N);
    const held = paraphrases(world.slice(0, HELD));
    const server = await temporal(tempDir());
    // Settled either way, and read below: a failure of the reference is thrown where its result is needed.
    const reference = referenceRun(world, held).then(
      (r) => ({ ...r, error: undefined }),
      (error: Error) => ({ ref: undefined, needed: undefined, error }),
    );

    const dir = tempDir();
    const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 99, latencyMs: 4 });
    writeWorld(dir, world, held);
    const runId = 'chaos';
    // The worker restarts on the same host: same scratch disk (where the trainer writes).
    const scratch = tempDir('slearn-chaos-scratch-');
    const trainDir = scratch;
    const env = { SLEARN_TRAINER: JSON.stringify(TRAINER), SLEARN_SCRATCH: scratch };
    let w: WorkerProcess = workerProcess(server.address, env);
    const workers = [w];
    let mostTrainers = 0;
    const sampler = setInterval(() => (mostTrainers = Math.max(mostTrainers, trainersOn(trainDir))), 150);
    const kills: { stage: string; chat: number }[] = [];
    // Once the test has ended (passed, failed or timed out), nothing is killed or started any more.
    let over = false;
    let last: Progress | undefined;
    const progress = async () => {
      try {
        last = await server.client.workflow.getHandle(runId).query(progressQuery);
      } catch {
        /* no worker to answer right now */
      }
      return last;
    };
    const killAndRestart = async () => {
      if (over) throw new Error('the test is over');
      await progress();
      kills.push({ stage: last?.stage ?? 'prepare', chat: fake.stats.chat });
      w.proc.kill('SIGKILL');
      await w.exited;
      w = workerProcess(server.address, env);
      workers.push(w);
      await w.ready;
    };
    const checkpoints = () => {
      const train = join(trainDir, 'train');
      if (!existsSync(train)) return 0;
      return readdirSync(train)
        .filter((d) => d.startsWith('chaos-'))
        .reduce((n, d) => n + readdirSync(join(train, d)).filter((f) => /^checkpoint-\d+$/.test(f)).length, 0);
    };
    try {
      await w.ready;
      const handle = await startRun(server.client, writeConfig(dir, fake.baseUrl, settings(fake.baseUrl)), { runId, heartbeatTimeout: HEARTBEAT_TIMEOUT });

      // 1–4: answering and grading.
      for (const at of [150, 600, 1100, 1600]) {
        await waitFor(() => fake.stats.chat >= at, 120_000, `${at} requests`);
        await killAndRestart();
      }
      // 5: as soon as answering is over (filter, or the start of training).
      await waitFor(async () => ['filter', 'train'].includes((await progress())?.stage ?? ''), 180_000, 'the filter stage');
      await killAndRestart();
      // 6–8: training, each after a new checkpoint.
      for (let k = 0; k < 3; k++) {
        const seen = checkpoints();
        await waitFor(() => checkpoints() > seen || last?.stage === 'evaluate', 240_000, 'a new checkpoint');
        if ((await progress())?.stage !== 'train') break;
        await killAndRestart();
      }
      // 9–10: evaluating (base, tuned and retention passes, side by side, after answering's N), once training is over.
      await waitFor(async () => !['prepare', 'answer-grade', 'filter', 'train'].includes((await progress())?.stage ?? 'train'), 480_000, 'the end of training');
      const evalStart = Math.max(fake.stats.chat, N);
      for (const extra of [150, 450]) {
        await waitFor(() => fake.stats.chat >= evalStart + extra, 240_000, `evaluation requests past ${evalStart + extra}`);
        await killAndRestart();
      }
      // Top up to at least ten kills with kills at random moments while the run lasts.
      while (kills.length < 10 && (await progress())?.stage !== 'done') {
        await new Promise((r) => setTimeout(r, 300 + ((kills.length * 7919) % 900)));
        await killAndRestart();
      }
      const result = await handle.result();
      clearInterval(sampler);
      const { ref, needed, error } = await reference;
      if (error) throw error;
      expect(ref.filter!.kept).toBeGreaterThan(3);
      expect(ref.filter!.kept).toBeLessThan(30);
      let redone = 0;
      let total = 0;
      for (const q of world) {
        redone += Math.max(0, (fake.stats.perQuestion.get(q.question) ?? 0) - (needed.get(q.question) ?? 0));
        total += needed.get(q.question) ?? 0;
      }
      console.log(
        `chaos: ${kills.length} kills (${kills.map((k) => k.stage).join(', ')}), ${redone} requests redone, at most ${mostTrainers} trainer(s) alive at once, training resumed from step ${result.train!.resumedFromStep}, ${fake.stats.chat} requests for ${total} needed`,
      );

      expect(kills.length).toBeGreaterThanOrEqual(10);
      const stages = new Set(kills.map((k) => k.stage));
      expect(stages.has('answer-grade')).toBe(true);
      expect(stages.has('train')).toBe(true);
      expect(stages.has('evaluate')).toBe(true);

      // Same outputs as the uninterrupted run.
      expectSameOutputs(result, ref);

      // Every item exactly once in the decisions file.
      const decisions = await (await openStore(result.store)).jsonlAll<DecisionRecord>(result.filter!.decisions);
      expect(decisions).toHaveLength(N);
      expect(new Set(decisions.map((d) => d.id)).size).toBe(N);

      // Redone requests: at most one window (chunk) of each shard or pass in flight, per kill.
      expect(redone).toBeLessThanOrEqual(kills.length * Math.max(SHARDS_IN_FLIGHT, EVAL_PASSES) * CHUNK);

      // Never two trainers on one output directory.
      expect(mostTrainers).toBeLessThanOrEqual(1);
    } catch (e) {
      // What a failure needs to be understood: where the kills fell, the stage, and the last worker's own words.
      console.error(
        `chaos failed at stage ${last?.stage ?? '?'} after ${fake.stats.chat} requests; kills: ${JSON.stringify(kills)}\nlast worker's output:\n${w.output.join('').split('\n').slice(-60).join('\n')}`,
      );
      throw e;
    } finally {
      over = true;
      clearInterval(sampler);
      for (const x of workers) x.proc.kill('SIGKILL');
      await reference; // its servers and worker are stopped when it settles
      await fake.close();
      await server.stop();
    }
  }, 900_000);
});
