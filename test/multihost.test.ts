/**
 * Workers on different hosts share only Temporal and an S3-compatible object store (a real
 * versitygw server, through the real AWS SDK over HTTP). Each "host" is a worker process with its
 * own scratch and state directories and its own host identity. A training host SIGKILLed after a
 * checkpoint is replaced by another host, which resumes from the checkpoint uploaded to the store;
 * the store restarted mid-run loses nothing; `audit` and `resume` work over S3.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, sep } from 'node:path';
import { promisify } from 'node:util';
import { startRun } from '../src/client';
import { openStore } from '../src/store/open';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { s3Env, startS3Server, type S3Server } from './support/s3server';
import { inProcessWorker, ROOT, temporal, tempDir, waitFor, workerProcess, type WorkerProcess } from './support/stack';
import { expectSameOutputs, makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const execFileP = promisify(execFile);

function mostAlive(file: string): number {
  const lines = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { event: string; t: number });
  let alive = 0;
  let most = 0;
  for (const l of lines.sort((a, b) => a.t - b.t)) {
    alive += l.event === 'start' ? 1 : -1;
    most = Math.max(most, alive);
  }
  return most;
}

describe('two hosts sharing only Temporal and an S3 store', () => {
  const world = makeWorld(48);
  const held = paraphrases(world.slice(0, 16));
  let s3: S3Server;
  let server: Awaited<ReturnType<typeof temporal>>;
  let fake: FakeModel;
  let stopMain: () => Promise<void>;
  const saved = { ...process.env };
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    s3 = await startS3Server();
    Object.assign(process.env, s3Env(s3));
    server = await temporal(tempDir());
    fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 5 });
    // The main queue (workflow, data steps) and adapter staging run here; training runs on the "hosts".
    stopMain = await inProcessWorker(server.address, undefined, { queues: ['slearn', 'slearn-model'] });
  });
  afterAll(async () => {
    for (const w of workers) w.proc.kill('SIGKILL');
    await stopMain?.();
    await server?.stop();
    await fake?.close();
    await s3?.stop();
    process.env = saved;
  });

  const scratchOf: Record<string, string> = {};
  const host = (name: string, env: NodeJS.ProcessEnv = {}) => {
    scratchOf[name] = tempDir(`slearn-${name}-scratch-`);
    const w = workerProcess(
      server.address,
      { ...s3Env(s3), SLEARN_HOST: name, SLEARN_HOME: tempDir(`slearn-${name}-`), SLEARN_SCRATCH: scratchOf[name], ...env },
      ['slearn-train'],
    );
    workers.push(w);
    return w;
  };

  function config(prefix: string) {
    const dir = tempDir();
    writeWorld(dir, world, held);
    return writeConfig(dir, fake.baseUrl, { artifacts: `s3://${s3.bucket}/${prefix}`, shardSize: 12, train: { epochs: 8, saveSteps: 4 } });
  }

  it('host A is killed after a checkpoint; host B resumes from the checkpoint in the store; outputs equal an uninterrupted run', async () => {
    const log = join(tempDir(), 'trainers.log');
    const env = { FAKE_TRAINER_STEP_MS: '150', FAKE_TRAINER_LOG: log };

    // The uninterrupted run, for reference: the whole loop over S3.
    const ref = host('reference-host', { FAKE_TRAINER_STEP_MS: '5' });
    await ref.ready;
    const refResult = await (await startRun(server.client, config('reference'), { runId: 'mh-reference' })).result();
    ref.proc.kill('SIGTERM');
    await ref.exited;

    const a = host('gpu-host-a', env);
    await a.ready;
    const handle = await startRun(server.client, config('twohosts'), { runId: 'mh-two-hosts', heartbeatTimeout: '3 seconds' });
    const store = await openStore(`s3://${s3.bucket}/twohosts`);
    // Wait until host A has uploaded a checkpoint, then kill the host.
    await waitFor(
      async () => (await store.listDocs('runs/mh-two-hosts')).some((k) => /\/checkpoints\/\d+\.json$/.test(k)),
      120_000,
      'a checkpoint in the store',
    );
    const killedAt = Date.now();
    a.proc.kill('SIGKILL');
    await a.exited;
    const b = host('gpu-host-b', env);
    await b.ready;

    const result = await handle.result();
    expectSameOutputs(result, refResult);
    expect(result.train!.resumedFromStep).toBeGreaterThan(0);
    expect(result.train!.runtime?.host).toBeDefined();
    // The trainer of the killed host stopped by itself (its worker's pipe closed); never two at once.
    expect(mostAlive(log)).toBe(1);
    // Host B trained in its own scratch; nothing of host A's disk was needed.
    const lines = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; out?: string; t: number });
    const dirs = [...new Set(lines.filter((l) => l.event === 'start').map((l) => l.out))];
    expect(dirs.length).toBe(2);
    // The two-host resume time: host A's lease (10 s here: twice the 3 s heartbeat timeout, at least
    // 10 s) must run out before B may train; B then restores the checkpoint and starts within seconds.
    const bStart = lines.filter((l) => l.event === 'start').at(-1)!;
    const resumeS = (bStart.t - killedAt) / 1000;
    console.log(`two-host resume: host B's trainer started ${resumeS.toFixed(1)} s after host A was killed (lease 10 s)`);
    expect(resumeS).toBeGreaterThanOrEqual(5);
    expect(resumeS).toBeLessThan(60);
    expect(dirs.every((d) => d && existsSync(d))).toBe(true);
    expect(dirs[0]!.startsWith(scratchOf['gpu-host-a'] + sep)).toBe(true);
    expect(dirs[1]!.startsWith(scratchOf['gpu-host-b'] + sep)).toBe(true);

    // `slearn audit` reads the lineage from the S3 store: dataset → shards → grades → training set → adapter → report.
    const audit = JSON.parse(
      (
        await execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), 'audit', 'mh-two-hosts', '--json'], {
          env: { ...process.env, TEMPORAL_ADDRESS: server.address },
        })
      ).stdout,
    ) as { lineage: { step: string; outputs: Record<string, { uri: string }> }[] };
    const steps = audit.lineage.map((s) => s.step);
    for (const s of ['prepare', 'answer-grade-000000', 'filter', 'train', 'eval-tuned', 'compare', 'promote', 'report']) expect(steps).toContain(s);
    expect(audit.lineage.find((s) => s.step === 'train')!.outputs.adapter.uri).toMatch(/^s3:\/\/slearn-test\/twohosts\/objects\//);
  }, 360_000);

  it('the store restarted mid-run loses nothing, and `slearn resume` works over S3', async () => {
    const h = host('gpu-host-c', { FAKE_TRAINER_STEP_MS: '5' });
    await h.ready;
    const handle = await startRun(server.client, config('restart'), { runId: 'mh-store-restart', heartbeatTimeout: '3 seconds' });
    await waitFor(() => fake.stats.chat > 20, 60_000, 'answering to be under way');
    await s3.kill();
    await new Promise((r) => setTimeout(r, 3000));
    await s3.restart();
    const result = await handle.result();
    expect(result.counts).toMatchObject({ items: 48, ungradeable: 0 });
    expect(result.evaluation!.tuned).toMatchObject({ correct: 16, total: 16 });

    // A resumed run reuses the finished steps from the store: no new answers are asked.
    const before = fake.stats.chat;
    const cli = await execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), 'resume', 'mh-store-restart', '--wait'], {
      env: { ...process.env, TEMPORAL_ADDRESS: server.address, SLEARN_HOME: tempDir() },
    });
    expect(cli.stdout).toMatch(/tuned accuracy/);
    expect(fake.stats.chat - before).toBe(0);
  }, 240_000);
});
