/**
 * Faults around a run: a flaky model endpoint, a judge that never fits its schema, the Temporal
 * server going away mid-run, a cancelled run with a trainer running, and a model server that
 * restarted (losing its adapters) while the run evaluates.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { audit, connect, startRun } from '../src/client';
import { openStore } from '../src/store/open';
import { startDevServer } from '../src/temporal/devServer';
import { isAlive } from '../src/proc';
import type { DecisionRecord } from '../src/schemas/results';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, stableHash, type FakeModel, type FaultKind } from './support/fakeModel';
import { temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { expectSameOutputs, makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

describe('faults', () => {
  const world = makeWorld(40);
  const held = paraphrases(world.slice(0, 10));
  const known = world.filter((w) => stableHash(w.question) % 100 < 50);

  const decisionsOf = async (r: RunResult) => (await openStore(r.store)).jsonlAll<DecisionRecord>(r.filter!.decisions);

  it("endpoint faults (429 + Retry-After, 500, 503, resets, hangs, truncated bodies, off-schema judge) lose nothing: the outcome is a clean run's", async () => {
    const kinds: FaultKind[] = ['rate_limit', 'server_error', 'unavailable', 'reset', 'hang', 'truncated', 'judge_bad_schema'];
    const clean = await startFakeModel({ items: world, knownPercent: 50 });
    const flaky = await startFakeModel({ items: world, knownPercent: 50, faults: { seed: 7, rate: 0.25, kinds, maxPerQuestion: 2 } });
    const server = await temporal(tempDir());
    const stop = await inProcessWorker(server.address);
    try {
      const run = async (fake: FakeModel, runId: string) => {
        const dir = tempDir();
        writeWorld(dir, world, held);
        const cfg = writeConfig(dir, fake.baseUrl, {
          grader: { type: 'judge', attempts: 3 },
          model: { baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 1 },
        });
        return await (await startRun(server.client, cfg, { runId })).result();
      };
      const ref = await run(clean, 'clean');
      const r = await run(flaky, 'faulty');
      for (const k of kinds) expect({ kind: k, injected: (flaky.stats.faultsInjected[k] ?? 0) > 0 }).toEqual({ kind: k, injected: true });
      // Every fault was asked again until an answer came through (in place, inside the activity).
      const faults = Object.values(flaky.stats.faultsInjected).reduce((a, b) => a + b, 0);
      expect(flaky.stats.chat).toBeGreaterThanOrEqual(clean.stats.chat + faults);

      // Nothing dropped: every item has exactly one decision, and the counts add up.
      const decisions = await decisionsOf(r);
      expect(new Set(decisions.map((d) => d.id)).size).toBe(40);
      expect(r.counts.known + r.counts.unknown + r.counts.ungradeable).toBe(40);
      // The outcome is that of a clean endpoint: same counts, decisions, training set and evaluation.
      expect(r.counts).toMatchObject({ known: known.length, ungradeable: 0 });
      expectSameOutputs(r, ref);
      expect(r.evaluation!.tuned).toMatchObject({ correct: 10, total: 10, ungradeable: 0 });

      // The audit shows every step completed: the faults were absorbed by retries inside the steps,
      // and no step failed for good.
      const a = await audit(server.client, 'faulty');
      // The judge measured against the rule grader on the same greedy answers, in the result and the audit.
      expect(r.filter!.agreement!.items).toBe(40);
      expect(a.result?.filter?.agreement).toEqual(r.filter!.agreement);
      const acts = a.runs.flatMap((x) => x.activities);
      const shards = (a.lineage.find((s) => s.step === 'prepare')!.result as { shards: number }).shards;
      expect(acts.filter((x) => x.activity === 'answerGradeShard').map((x) => x.input)).toEqual(Array.from({ length: shards }, (_, i) => `shard ${i}`));
      for (const x of acts) expect({ activity: x.activity, outcome: x.outcome }).toEqual({ activity: x.activity, outcome: 'completed' });
      expect(acts.every((x) => x.attempts >= 1 && x.durationMs !== undefined)).toBe(true);
    } finally {
      await stop();
      await server.stop();
      await clean.close();
      await flaky.close();
    }
  });

  it('a judge that never answers in its schema makes items ungradeable: counted, not trained on, not wrong', async () => {
    const dir = tempDir();
    const fake = await startFakeModel({ items: world, knownPercent: 50, faults: { seed: 1, rate: 1, kinds: ['judge_bad_schema'] } });
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address);
    try {
      writeWorld(dir, world, held);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, { grader: { type: 'judge', attempts: 2 } }), { runId: 'judge-off-schema' });
      const r = await h.result();
      expect(r.counts).toMatchObject({ items: 40, answered: 40, graded: 0, ungradeable: 40, known: 0, unknown: 0 });
      expect(r.filter).toMatchObject({ ungradeable: 40, kept: 0, dropped: 0, replayed: 0 });
      expect(r.filter!.trainSet.count).toBe(0);
      expect(r.train!.skipped).toBe(true);
      // Not counted as wrong: they are left out of the accuracy and reported beside it.
      expect(r.evaluation!.base).toMatchObject({ total: 0, ungradeable: 10, correct: 0 });
      expect(r.promotion).toMatchObject({ promoted: false });
      const decisions = await decisionsOf(r);
      expect(decisions).toHaveLength(40);
      for (const d of decisions) {
        expect(d.decision).toBe('ungradeable');
        expect(d.why).toMatch(/did not fit the schema after 2 attempts.*neither trained on nor counted as wrong/);
        expect(d.answers).toHaveLength(1); // the answer is kept, for the report
      }
      expect(fake.stats.judge).toBe(40 * 2 + 10 * 2); // every answer, each asked `attempts` times (training items and the base's held-out pass)
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
    try {
      writeWorld(dir, world, held);
      const client = await connect({ ...process.env, TEMPORAL_ADDRESS: server.address });
      await startRun(client, writeConfig(dir, fake.baseUrl), { runId: 'restart' });
      await waitFor(() => fake.stats.chat >= 12, 60_000, 'answering to start');
      await server.stop();
      const askedWhileDown = fake.stats.chat;
      server = await startDevServer({ headless: true, db: join(dir, 'temporal.db'), port, logFile: join(dir, 'temporal.log') });
      const r = (await client.workflow.getHandle('restart').result()) as RunResult;
      expect(askedWhileDown).toBeLessThan(40);
      expect(r.counts).toEqual({ items: 40, answered: 40, graded: 40, known: known.length, unknown: 40 - known.length, ungradeable: 0 });
      expect(r.evaluation!.tuned).toMatchObject({ correct: 10, total: 10 });
      // Nothing was asked twice: each training question once, each held-out one per model, known ones once more (retention).
      for (const w of world) expect(fake.stats.perQuestion.get(w.question) ?? 0).toBeLessThanOrEqual(1 + 2 + 1);
      await client.connection.close();
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });

  it('cancelling a run during training stops the trainer process within seconds', async () => {
    const dir = tempDir();
    const log = join(dir, 'trainers.log');
    const fake = await startFakeModel({ items: world, knownPercent: 50 });
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address, undefined, { env: { FAKE_TRAINER_STEP_MS: '200', FAKE_TRAINER_LOG: log } });
    try {
      writeWorld(dir, world, held);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl, { train: { epochs: 100, saveSteps: 10 } }), { runId: 'cancel-me' });
      let pid = 0;
      await waitFor(
        () => {
          if (!existsSync(log)) return false;
          pid = JSON.parse(readFileSync(log, 'utf8').split('\n')[0]).pid;
          return pid > 0 && isAlive(pid);
        },
        60_000,
        'the trainer to run',
      );
      const t0 = Date.now();
      await h.cancel();
      await waitFor(() => !isAlive(pid), 15_000, 'the trainer to stop');
      expect(Date.now() - t0).toBeLessThan(10_000);
      await expect(h.result()).rejects.toThrow();
      await waitFor(async () => (await h.describe()).status.name === 'CANCELLED', 15_000, 'the run to be cancelled');
      const exits = readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .filter((e) => e.event === 'exit');
      expect(exits).toEqual([expect.objectContaining({ pid, code: 143, signal: 'SIGTERM' })]);
      // No other trainer was started for it.
      expect(
        readFileSync(log, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l))
          .filter((e) => e.event === 'start'),
      ).toHaveLength(1);
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });

  it('a model server that restarts mid-evaluation loses the tuned adapter: it is staged again and the run completes', async () => {
    const dir = tempDir();
    const heldAll = paraphrases(world.slice(0, 40));
    const fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 80 });
    const server = await temporal(dir);
    const stop = await inProcessWorker(server.address);
    try {
      writeWorld(dir, world, heldAll);
      const h = await startRun(server.client, writeConfig(dir, fake.baseUrl), { runId: 'adapter-lost' });
      // Once the tuned model has answered a few held-out items, the server "restarts": the adapter is gone.
      let name = '';
      await waitFor(
        () => {
          name = fake.stats.loads[0] ?? '';
          return Boolean(name) && (fake.stats.perModel.get(name) ?? 0) >= 4;
        },
        60_000,
        'the tuned model to be evaluated',
      );
      const before = fake.stats.perModel.get(name)!;
      const unload = await fetch(`${fake.baseUrl}/unload_lora_adapter`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ lora_name: name }),
      });
      expect(unload.status).toBe(200);
      const r = await h.result();

      // Staged again (loaded a second time), and the evaluation of the tuned model is complete and right.
      expect(fake.stats.loads).toEqual([name, name]);
      expect(r.evaluation!.tuned).toMatchObject({ correct: 40, total: 40, ungradeable: 0 });
      // Retention: the fixed retention set, half the known items, all still right.
      expect(r.evaluation!.retention).toMatchObject({ correct: Math.floor(known.length / 2), total: Math.floor(known.length / 2), ungradeable: 0 });
      expect(r.promotion).toMatchObject({ promoted: true });
      // What was answered before the loss was kept: the tuned model was asked at most once per item, plus what was in flight.
      expect(fake.stats.perModel.get(name)!).toBeGreaterThan(before);
      expect(fake.stats.perModel.get(name)!).toBeLessThanOrEqual(40 + known.length + 2 * 8);

      // The audit shows why: a pass failed with AdapterNotLoaded, and the adapter was staged again.
      const acts = (await audit(server.client, 'adapter-lost')).runs.flatMap((x) => x.activities);
      expect(acts.filter((x) => x.activity === 'stageAdapter').length).toBeGreaterThanOrEqual(2);
      const lost = acts.filter((x) => x.activity === 'evaluatePass' && x.outcome === 'failed');
      expect(lost.length).toBeGreaterThanOrEqual(1);
      expect(lost[0].failure).toMatch(new RegExp(`adapter ${name} is not loaded on the endpoint`));
    } finally {
      await stop();
      await server.stop();
      await fake.close();
    }
  });
});
