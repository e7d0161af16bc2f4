import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { audit, startRun } from '../src/client';
import { ArtifactStore } from '../src/artifacts/store';
import { startDevServer } from '../src/temporal/devServer';
import { isAlive } from '../src/activities/trainer-process';
import type { DecisionRecord } from '../src/activities/filter';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, stableHash, type FaultKind } from './support/fakeModel';
import { temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

describe('faults', () => {
  const world = makeWorld(40);
  const known = world.filter((w) => stableHash(w.question) % 100 < 50);

  it('endpoint faults (429 + Retry-After, 500, 503, resets, hangs, truncated bodies, off-schema judge) lose nothing and show in the audit', async () => {
    const dir = tempDir();
    const kinds: FaultKind[] = ['rate_limit', 'server_error', 'unavailable', 'reset', 'hang', 'truncated', 'judge_bad_schema'];
    const fake = await startFakeModel({ items: world, knownPercent: 50, faults: { seed: 7, rate: 0.25, kinds, maxPerQuestion: 2 } });
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address);
    try {
      writeJsonl(join(dir, 'train.jsonl'), world);
      const cfg = writeConfig(dir, fake.baseUrl, { grader: { type: 'judge', attempts: 3 }, model: { baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 1 } });
      const h = await startRun(server.client, cfg, { runId: 'faulty' });
      const r = (await h.result()) as RunResult;
      for (const k of kinds) expect(fake.stats.faultsInjected[k] ?? 0).toBeGreaterThan(0);
      // Nothing dropped: every item has exactly one decision, and the counts add up.
      const decisions = new ArtifactStore(join(dir, 'artifacts')).readJsonl<DecisionRecord>(r.filter.decisions);
      expect(new Set(decisions.map((d) => d.id)).size).toBe(40);
      expect(r.counts.known + r.counts.unknown + r.counts.ungradeable).toBe(40);
      // Faults are retried until answers come through: the outcome is that of a clean endpoint.
      expect(r.counts.known).toBe(known.length);
      expect(r.counts.ungradeable).toBe(0);
      // Retries that reached Temporal are visible in the audit.
      const a = await audit(server.client, 'faulty');
      const retried = a.runs.flatMap((x) => x.activities).filter((x) => x.attempts > 1);
      expect(retried.length).toBeGreaterThan(0);
      expect(retried.some((x) => x.lastFailure)).toBe(true);
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });

  it('a judge that never answers in its schema makes items ungradeable: counted, not dropped, not wrong', async () => {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50, faults: { seed: 1, rate: 1, kinds: ['judge_bad_schema'] } });
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address);
    try {
      writeJsonl(join(dir, 'train.jsonl'), world);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, { grader: { type: 'judge', attempts: 2 } }), { runId: 'judge-off-schema' });
      const r = (await h.result()) as RunResult;
      expect(r.counts).toMatchObject({ items: 40, ungradeable: 40, known: 0, unknown: 0 });
      expect(r.filter).toMatchObject({ ungradeable: 40, kept: 0, dropped: 0 });
      expect(r.train.skipped).toBe(true);
      expect(r.evaluation.base).toMatchObject({ total: 0, ungradeable: 40, correct: 0 });
      const decisions = new ArtifactStore(join(dir, 'artifacts')).readJsonl<DecisionRecord>(r.filter.decisions);
      expect(decisions.every((d) => d.decision === 'ungradeable' && /did not fit the schema/.test(d.why))).toBe(true);
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });

  it('the Temporal server stopped mid-run and started again on the same SQLite file: the run completes', async () => {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 60 });
    let server = await startDevServer({ headless: true, db: join(dir, 'temporal.db'), logFile: join(dir, 'temporal.log') });
    const port = Number(server.address.split(':')[1]);
    const stop = await inProcessWorker(server.address);
    const { connect } = await import('../src/client');
    try {
      writeJsonl(join(dir, 'train.jsonl'), world);
      const client = await connect(server.address);
      await startRun(client, writeConfig(dir, fake.baseUrl), { runId: 'restart' });
      await waitFor(() => fake.stats.chat >= 12, 60_000, 'answering to start');
      await server.stop();
      const askedWhileDown = fake.stats.chat;
      server = await startDevServer({ headless: true, db: join(dir, 'temporal.db'), port, logFile: join(dir, 'temporal.log') });
      const client2 = await connect(server.address);
      const r = (await client2.workflow.getHandle('restart').result()) as RunResult;
      expect(askedWhileDown).toBeLessThan(40 * 3);
      expect(r.counts).toEqual({ items: 40, answered: 40, graded: 40, known: known.length, unknown: 40 - known.length, ungradeable: 0 });
      expect(r.evaluation.tuned).toMatchObject({ correct: 40, total: 40 });
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });

  it('cancelling a run during training stops the trainer process within seconds', async () => {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50 });
    const server = await temporal(dir);
    process.env.FAKE_TRAINER_STEP_MS = '200';
    const stop = await inProcessWorker(server.address);
    try {
      writeJsonl(join(dir, 'train.jsonl'), world);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, { train: { epochs: 100, saveSteps: 10 } }), { runId: 'cancel-me' });
      const lock = join(dir, 'artifacts', 'runs', 'cancel-me', 'train', '.slearn-train.lock');
      let pid = 0;
      await waitFor(() => {
        if (!existsSync(lock)) return false;
        pid = JSON.parse(readFileSync(lock, 'utf8')).trainerPid;
        return pid > 0 && isAlive(pid);
      }, 60_000, 'the trainer to run');
      const t0 = Date.now();
      await h.cancel();
      await waitFor(() => !isAlive(pid), 15_000, 'the trainer to stop');
      const stoppedAfterMs = Date.now() - t0;
      expect(stoppedAfterMs).toBeLessThan(10_000);
      await expect(h.result()).rejects.toThrow();
      expect((await h.describe()).status.name).toBe('CANCELLED');
    } finally {
      delete process.env.FAKE_TRAINER_STEP_MS;
      await stop();
      await server.stop();
      await fake.close();
    }
  });
});
