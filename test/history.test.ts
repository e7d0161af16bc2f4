/**
 * History is O(1) in the duration of an activity: a minute of training that reports a step every
 * 15 ms adds the same few events as a one-step training, while `slearn status` shows the step and
 * the loss move (they travel in heartbeat details, read with describe()). And a live attempt is
 * never declared dead: requests slower than the heartbeat timeout complete in one attempt.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { temporal as proto } from '@temporalio/proto';
import { runStatus, startRun } from '../src/client';
import { progressLine } from '../src/cli/output';
import { isTrainProgress, type TrainProgressDetails } from '../src/schemas/progress';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { inProcessWorker, ROOT, temporal, tempDir, waitFor } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const EventType = proto.api.enums.v1.EventType;
const execFileP = promisify(execFile);

describe('history stays small and live attempts stay alive', () => {
  let server: Awaited<ReturnType<typeof temporal>>;
  let stop: () => Promise<void>;
  const saved = process.env.FAKE_TRAINER_STEP_MS;

  beforeAll(async () => {
    server = await temporal(tempDir());
    process.env.FAKE_TRAINER_STEP_MS = '15';
    stop = await inProcessWorker(server.address);
  });
  afterAll(async () => {
    await stop?.();
    await server?.stop();
    if (saved === undefined) delete process.env.FAKE_TRAINER_STEP_MS;
    else process.env.FAKE_TRAINER_STEP_MS = saved;
  });

  it('a 60-second training with a step every 15 ms adds at most 4 events, while status shows step and loss moving', async () => {
    const world = makeWorld(360);
    const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 50 });
    try {
      const dir = tempDir();
      writeWorld(dir, world, paraphrases(world.slice(0, 20)));
      // ~180 unknown items → ~45 steps per epoch × 100 epochs ≈ 4,500 steps of 15 ms: over a minute.
      const cfg = writeConfig(dir, fake.baseUrl, { shardSize: 400, train: { epochs: 100, saveSteps: 1000 } });
      const h = await startRun(server.client, cfg, { runId: 'history-long-train' });

      // While it trains, `slearn status` (the same call) shows a moving step and a loss.
      const seen: TrainProgressDetails[] = [];
      await waitFor(
        async () => (await runStatus(server.client, h.workflowId)).pending.some((a) => isTrainProgress(a.progress) && a.progress.step > 0),
        60_000,
        'training to start',
      );
      const t0 = Date.now();
      let line = '';
      while (Date.now() - t0 < 25_000) {
        const s = await runStatus(server.client, h.workflowId);
        const p = s.pending.map((a) => a.progress).find(isTrainProgress);
        if (p) {
          seen.push(p);
          line = progressLine(s);
        }
        // Workers send heartbeats at most every 3 s: sample a little slower than that.
        await new Promise((r) => setTimeout(r, 3500));
      }
      expect(seen.length).toBeGreaterThanOrEqual(5);
      expect(new Set(seen.map((p) => p.step)).size).toBeGreaterThanOrEqual(4);
      expect(seen.at(-1)!.step).toBeGreaterThan(seen[0].step);
      expect(seen.every((p) => typeof p.loss === 'number' && p.totalSteps === seen[0].totalSteps)).toBe(true);
      expect(line).toMatch(/stage train \| \d+\/\d+ \| step \d+\/\d+ · loss \d\.\d{3}/);
      // The real CLI prints the same line (run asynchronously: this process hosts the worker that answers).
      const cli = await execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), 'status', h.workflowId], {
        env: { ...process.env, TEMPORAL_ADDRESS: server.address },
      });
      expect(cli.stdout).toMatch(/stage train \| .*loss/);

      const r = await h.result();
      expect(r.train!.steps).toBe(seen[0].totalSteps);
      expect(r.train!.steps).toBeGreaterThanOrEqual(4000);
      expect(r.train!.trainSeconds).toBeGreaterThanOrEqual(60);

      const events = (await server.client.workflow.getHandle(h.workflowId).fetchHistory()).events ?? [];
      const scheduled = events.findIndex(
        (e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED && e.activityTaskScheduledEventAttributes?.activityType?.name === 'train',
      );
      const scheduledId = Number(events[scheduled].eventId);
      const completed = events.findIndex(
        (e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED && Number(e.activityTaskCompletedEventAttributes?.scheduledEventId) === scheduledId,
      );
      // Scheduled, started, completed: nothing per step, per checkpoint or per heartbeat.
      expect(completed - scheduled + 1).toBeLessThanOrEqual(4);
    } finally {
      await fake.close();
    }
  }, 300_000);

  it('a shard whose every request takes longer than the heartbeat timeout completes in its first attempt', async () => {
    const world = makeWorld(8);
    const fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 3500 });
    try {
      const dir = tempDir();
      writeWorld(dir, world, paraphrases(world.slice(0, 4)));
      const cfg = writeConfig(dir, fake.baseUrl, {
        model: { baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 20 },
        answer: { concurrency: 4, chunkSize: 4 },
        shardSize: 8,
      });
      const h = await startRun(server.client, cfg, { runId: 'history-slow-requests', heartbeatTimeout: '1 second' });
      await h.result();
      const events = (await server.client.workflow.getHandle(h.workflowId).fetchHistory()).events ?? [];
      const started = events.filter((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED);
      expect(started.length).toBeGreaterThan(3);
      // Every activity, the shard and the evaluation passes included, ran exactly once.
      for (const e of started) expect(e.activityTaskStartedEventAttributes?.attempt).toBe(1);
      expect(events.some((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT)).toBe(false);
    } finally {
      await fake.close();
    }
  }, 180_000);
});
