/**
 * The real trainer (SmolLM2-135M, LoRA, on the CPU) as a GPU host would run it, proved here:
 *
 * - Two training processes on one host, started by the training worker under torch's launcher
 *   (`python -m torch.distributed.run`, gloo on CPU), through the real CLI (`slearn run --wait`) and a
 *   real worker process: one set of events, one adapter, one upload per checkpoint; one rank SIGKILLed
 *   mid-run fails the attempt, and the retry resumes from the newest checkpoint and completes; the loss
 *   curve equals a 1-process run of the same effective batch within 2e-5 at every step (absolute; the
 *   loss starts near 5). The same examples make each optimiser step whatever the process count; only
 *   float32 rounding differs (the gradient of two half batches summed by an all-reduce instead of one
 *   batch, machine epsilon 1.2e-7 on values up to ~5), and it grows a little with each step: measured
 *   2.6e-6 at most over 12 steps (0 at step 1), so the tolerance is 8 times that. A wrong batch split or
 *   data shard changes which examples a step sees, and the loss by more than 1e-2 from the first steps,
 *   500 times the tolerance. (Relative differences are no measure near convergence: 1e-7 on a loss of
 *   4e-4 is 2e-4.)
 * - Exact resume from the store on another host: a training stopped after its first checkpoint was
 *   uploaded, resumed on a host with an empty scratch disk (so from the store), gives the same losses
 *   after the resume point and the same adapter weights, bit for bit, as an uninterrupted training.
 *
 * One thread per trainer process (SLEARN_THREADS=1): two threads on two busy cores made single-process
 * steps several times slower, and the figures compared here do not depend on it.
 */
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRun } from '../src/client';
import { trainerCommand } from '../src/paths';
import { train } from '../src/pipeline/train';
import { ConfigSchema } from '../src/schemas/config';
import type { RunResult, StepCtx } from '../src/schemas/run';
import { LocalBackend } from '../src/store/local';
import { readManifest } from '../src/store/manifest';
import { openStore } from '../src/store/open';
import { Store } from '../src/store/store';
import { stepEnv } from './support/env';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { inProcessWorker, ROOT, temporal, tempDir, waitFor, workerProcess, type WorkerProcess } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const execFileP = promisify(execFile);
const TOLERANCE = 2e-5; // absolute, per step (see above)
const REAL_TRAINER = JSON.stringify(trainerCommand());

/** Trainer processes of a training (any rank) whose command line names `dir`, with their RANK. */
function trainerRanks(dir: string): { pid: number; rank?: string }[] {
  const found: { pid: number; rank?: string }[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
      if (!cmd.includes(dir) || !cmd.includes('slearn_trainer') || !cmd.includes(' train ')) continue;
      const env = readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      found.push({ pid: Number(p), rank: env.find((e) => e.startsWith('RANK='))?.slice(5) });
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

type Event = { event: string; step?: number };
/** Every event the trainer of run `runId` printed, all attempts, as the activity logged them in its scratch dir. */
function eventsOf(scratch: string, runId: string): Event[] {
  const dir = join(scratch, 'train');
  const [d] = readdirSync(dir).filter((n) => n.startsWith(`${runId}-`));
  if (!d) return [];
  try {
    return readFileSync(join(dir, d, 'trainer-events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Event);
  } catch {
    return [];
  }
}

async function lossCurve(r: RunResult): Promise<Map<number, number>> {
  const store = await openStore(r.store);
  return new Map((await store.jsonlAll<{ step: number; loss: number }>(r.train!.losses!)).map((p) => [p.step, p.loss]));
}

describe('the real trainer on several processes, and resumed from the store', () => {
  const world = makeWorld(16, 'dist');
  let server: Awaited<ReturnType<typeof temporal>>;
  let fake: FakeModel;
  let stopMain: () => Promise<void>;
  let trainHost: WorkerProcess;
  const scratch = tempDir('slearn-dist-scratch-');

  beforeAll(async () => {
    server = await temporal(tempDir());
    // Nothing is known: the 16 items are the training set, 4 steps per epoch at a batch of 4, 12 steps.
    fake = await startFakeModel({ items: world, knownPercent: 0, latencyMs: 1 });
    stopMain = await inProcessWorker(server.address, undefined, { queues: ['slearn', 'slearn-model'] });
    trainHost = workerProcess(server.address, { SLEARN_TRAINER: REAL_TRAINER, SLEARN_SCRATCH: scratch, SLEARN_THREADS: '1' }, ['slearn-train']);
    await trainHost.ready;
  }, 120_000);
  afterAll(async () => {
    trainHost?.proc.kill('SIGTERM');
    await trainHost?.exited;
    await stopMain?.();
    await server?.stop();
    await fake?.close();
  });

  const config = (processes: number) => {
    const dir = tempDir();
    writeWorld(dir, world, paraphrases(world.slice(0, 4)));
    return writeConfig(dir, fake.baseUrl, {
      name: `dist-${processes}`,
      // asks for the CPU: two processes on gloo (on a GPU host, auto would take the GPUs)
      train: { base: 'smollm2-135m-instruct', epochs: 3, batchSize: 4, saveSteps: 4, maxSeqLen: 48, learningRate: 3e-4, processes, device: 'cpu' },
    });
  };

  it('2 processes through the CLI: one set of events, one upload per checkpoint; a killed rank is resumed; the curve of 1 process', async () => {
    const t0 = Date.now();
    const reference = await (await startRun(server.client, config(1), { runId: 'dist-one' })).result();
    expect(reference.train).toMatchObject({ steps: 12, runtime: { processes: 1, perDeviceBatch: 4, gradientAccumulation: 1, effectiveBatch: 4 } });
    const t1 = Date.now();

    const cli = execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), 'run', config(2), '--id', 'dist-two', '--wait', '--json'], {
      env: { ...process.env, TEMPORAL_ADDRESS: server.address, SLEARN_HOME: tempDir() },
      maxBuffer: 16 << 20,
    });
    // When the first checkpoint is uploaded, SIGKILL rank 1: the attempt fails and its retry resumes.
    const outDir = join(scratch, 'train');
    await waitFor(() => trainerRanks(outDir).some((r) => r.rank === '1'), 120_000, 'the two ranks');
    await waitFor(() => eventsOf(scratch, 'dist-two').some((e) => e.event === 'checkpoint'), 300_000, 'a checkpoint');
    const victim = trainerRanks(outDir).find((r) => r.rank === '1')!;
    process.kill(victim.pid, 'SIGKILL');
    const stdout = (await cli).stdout;
    const result = JSON.parse(stdout.slice(stdout.indexOf('{'))) as RunResult;
    const t2 = Date.now();

    expect(result.train).toMatchObject({
      skipped: false,
      steps: 12,
      runtime: { device: 'cpu', processes: 2, perDeviceBatch: 2, gradientAccumulation: 1, effectiveBatch: 4, distributed: 'ddp' },
    });
    expect(result.train!.resumedFromStep).toBeGreaterThanOrEqual(4);
    // One set of events per attempt (rank 1 never spoke): a start each, one done, each checkpoint once.
    const evs = eventsOf(scratch, 'dist-two');
    expect(evs.filter((e) => e.event === 'start')).toHaveLength(2);
    expect(evs.filter((e) => e.event === 'done')).toHaveLength(1);
    const saves = evs.filter((e) => e.event === 'checkpoint').map((e) => e.step!);
    expect(new Set(saves).size).toBe(saves.length);
    expect(saves).toEqual(expect.arrayContaining([4, 8, 12]));
    // ... and every save uploaded once (the worker logs each upload), one adapter in the scratch dir.
    const uploads = trainHost.output
      .join('')
      .split('\n')
      .filter((l) => l.includes('checkpoint uploaded') && l.includes('dist-two'))
      .map((l) => Number(/"step":(\d+)/.exec(l)![1]));
    expect(uploads.sort((a, b) => a - b)).toEqual([...saves].sort((a, b) => a - b));
    for (const d of readdirSync(outDir).filter((n) => n.startsWith('dist-two'))) {
      expect(readdirSync(join(outDir, d)).filter((n) => n.includes('adapter'))).toEqual(['adapter']);
    }
    expect(trainerRanks(outDir)).toEqual([]);

    // The loss curve of 2 processes is that of 1, within the tolerance.
    const one = await lossCurve(reference);
    const two = await lossCurve(result);
    expect([...two.keys()]).toEqual([...one.keys()]);
    const worst = Math.max(...[...one].map(([s, l]) => Math.abs(two.get(s)! - l)));
    console.log(
      `1 vs 2 processes: largest loss difference ${worst.toExponential(2)} over ${one.size} steps (loss ${one.get(1)!.toFixed(2)} → ${one.get(one.size)!.toFixed(3)}); ` +
        `1 process ${((t1 - t0) / 1000).toFixed(0)} s, 2 processes with a killed rank ${((t2 - t1) / 1000).toFixed(0)} s (whole runs)`,
    );
    expect(worst).toBeLessThan(TOLERANCE);
    // The summary says it trained on the CPU.
    const status = await execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), 'status', 'dist-two'], {
      env: { ...process.env, TEMPORAL_ADDRESS: server.address, COLUMNS: '240' },
    });
    expect(status.stdout).toMatch(/Trained on the CPU, not a GPU/);
  }, 1_200_000);

  it('a training stopped after its first upload resumes on another host from the store, exactly', async () => {
    const dir = tempDir();
    const store = new Store(new LocalBackend(join(dir, 'store')));
    const cfg = ConfigSchema.parse({
      name: 'exact',
      dataset: '/x.jsonl',
      model: { baseUrl: 'http://127.0.0.1:9/v1', name: 'smollm2-135m-instruct' },
      train: { epochs: 3, batchSize: 4, saveSteps: 2, maxSeqLen: 48, learningRate: 1e-3, loraDropout: 0.1, device: 'cpu', processes: 1 },
    });
    const rows = world.slice(0, 8).map((w) => ({
      messages: [
        { role: 'user', content: w.question },
        { role: 'assistant', content: w.answer },
      ],
    }));
    const trainSet = await store.putJsonl(rows);
    const ctx = (runId: string): Promise<StepCtx> => store.putJson(cfg).then((config) => ({ runId, store: store.url, config }));
    const env = (over: Parameters<typeof stepEnv>[0] = {}) =>
      stepEnv({ trainer: trainerCommand(), env: { ...process.env, SLEARN_THREADS: '1' }, scratch: tempDir('slearn-host-'), ...over });

    const reference = await train(env(), { ctx: await ctx('exact-ref'), trainSet });

    // Host A: stopped (as a cancelled or lost attempt is) once its first checkpoint is in the store.
    const stopA = new AbortController();
    const beats: { uploadedStep?: number }[] = [];
    const runCtx = await ctx('exact-run');
    const a = train(env({ signal: stopA.signal, progress: (d) => beats.push(d as { uploadedStep?: number }) }), { ctx: runCtx, trainSet });
    await waitFor(() => beats.some((b) => (b.uploadedStep ?? 0) > 0), 300_000, 'the first upload');
    stopA.abort();
    await expect(a).rejects.toThrow();
    // Host B: an empty scratch disk, so everything it resumes from comes from the store.
    const b = await train(env(), { ctx: runCtx, trainSet });

    expect(b.resumedFromStep).toBeGreaterThan(0);
    expect(b.steps).toBe(reference.steps);
    const curve = async (r: typeof b) => new Map((await store.jsonlAll<{ step: number; loss: number }>(r.losses!)).map((p) => [p.step, p.loss]));
    const [ref, res] = [await curve(reference), await curve(b)];
    const after = [...ref].filter(([s]) => s > b.resumedFromStep);
    expect(after.length).toBeGreaterThan(0);
    for (const [s, l] of after) expect(res.get(s)).toBe(l);
    const weights = async (r: typeof b) => (await readManifest(store, r.adapter!)).files.find((f) => f.name === 'adapter_model.safetensors')!.ref.sha256;
    expect(await weights(b)).toBe(await weights(reference));
    console.log(`exact resume from the store: resumed at step ${b.resumedFromStep} of ${b.steps}, ${after.length} losses and the adapter weights equal`);
  }, 900_000);
});
