/**
 * The activities as Temporal runs them, in MockActivityEnvironment (no server): built with
 * createActivities(deps) from what a worker injects. They heartbeat their progress on a ticker
 * (a slow request never makes a live attempt look dead), resume from their heartbeat details and
 * what they flushed, stop at once when cancelled (model requests aborted, the trainer's process
 * group stopped), and sort failures into Temporal's retry semantics.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { createActivities, toFailure } from '../src/activities';
import { AdapterNotLoaded, InvalidInput, ModelCallError, PolicyError, RunIdReused, StoreNotShared, TrainerBusy, TrainerError } from '../src/errors';
import { isAlive } from '../src/proc';
import type { TrainProgressDetails, WorkProgress } from '../src/schemas/progress';
import type { Prepared } from '../src/schemas/run';
import { openStore } from '../src/store/open';
import { runKey } from '../src/store/steps';
import { workerDeps } from '../src/worker';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { FAKE_TRAINER, tempDir, testPolicy, waitFor } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

type Beat = { t: number; d: unknown };

/** A mock activity context with a heartbeat timeout (the ticker derives from it), recording heartbeats. */
function mockEnv(info: Record<string, unknown> = {}): { env: MockActivityEnvironment; beats: Beat[] } {
  const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 1000, ...info });
  const beats: Beat[] = [];
  env.on('heartbeat', (d: unknown) => beats.push({ t: Date.now(), d }));
  return { env, beats };
}

/** MockActivityEnvironment.run with the activity's own types. */
function run<I, R>(env: MockActivityEnvironment, fn: (input: I) => Promise<R>, input: I): Promise<R> {
  return env.run(fn, input);
}

const failureOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected the activity to fail');
    },
    (e) => e as ApplicationFailure,
  );

describe('activities in MockActivityEnvironment', () => {
  const dir = tempDir();
  const store = `file://${join(dir, 'artifacts')}`;
  const world = makeWorld(24);
  const trainerLog = join(dir, 'trainers.log');
  let fake: FakeModel;
  let slow: FakeModel;
  const deps = () =>
    workerDeps({
      policy: testPolicy(),
      trainer: FAKE_TRAINER,
      scratch: tempDir('slearn-scratch-'),
      adapterDir: tempDir('slearn-adapters-'),
      env: { ...process.env, SLEARN_TRAINER_ENV: 'FAKE_TRAINER_*', FAKE_TRAINER_STEP_MS: '50', FAKE_TRAINER_LOG: trainerLog },
    });
  const acts = createActivities(deps());

  /** A config of its own for `runId` (in dir/runId), prepared by the prepare activity. */
  async function prep(runId: string, baseUrl = fake.baseUrl, overrides: Record<string, unknown> = {}, items = world): Promise<Prepared> {
    const sub = join(dir, runId);
    mkdirSync(sub, { recursive: true });
    writeWorld(sub, items, paraphrases(items.slice(0, 6)));
    const configFile = writeConfig(sub, baseUrl, { shardSize: 12, ...overrides });
    return run(new MockActivityEnvironment(), acts.prepare, { configFile, store, runId });
  }

  const base = (p: Prepared) => ({ label: 'base' as const, name: p.endpoint.name });

  beforeAll(async () => {
    fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 5 });
    slow = await startFakeModel({ items: world, knownPercent: 50, latencyMs: 2500 });
  });
  afterAll(async () => {
    await fake?.close();
    await slow?.close();
  });

  it('answerGradeShard returns references and counts, heartbeating its progress', async () => {
    const p = await prep('unit');
    expect(p.shards).toBe(2);
    const { env, beats } = mockEnv();
    const r = await run(env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) });
    expect(r.grades.count).toBe(12);
    expect(r.counts).toMatchObject({ answered: 12, graded: 12, ungradeable: 0 });
    expect(r.counts.known + r.counts.unknown).toBe(12);
    // Heartbeats start with the attempt (a retry's details come back to it through them).
    expect(beats.length).toBeGreaterThanOrEqual(1);
    // The items are in the store, not in the result: a reference and counts.
    const stored = await (await openStore(store)).jsonlAll<{ id: string; status: string }>(r.grades);
    expect(stored.map((g) => g.id)).toEqual(world.slice(0, 12).map((w) => w.id));
    expect(JSON.stringify(r).length).toBeLessThan(1000);
  });

  it('a step slower than several heartbeat intervals still heartbeats: a live attempt never looks dead', async () => {
    // Every request takes 2.5 s; all 12 of the shard are in flight at once, so nothing finishes for 2.5 s.
    const p = await prep('unit-slow', slow.baseUrl, {
      answer: { concurrency: 12, chunkSize: 12, maxTokens: 16 },
      model: { baseUrl: slow.baseUrl, name: 'fake-model', timeoutSeconds: 30 },
    });
    const { env, beats } = mockEnv();
    const t0 = Date.now();
    const r = await run(env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 1, model: base(p) });
    const t1 = Date.now();
    expect(r.grades.count).toBe(12);
    expect(t1 - t0).toBeGreaterThan(2400);
    // The heartbeat timeout is 1 s: beats come well inside it, from start to end, while no item finished.
    const times = [t0, ...beats.map((b) => b.t), t1];
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(Math.max(...gaps)).toBeLessThan(700);
    expect(beats.filter((b) => b.t < t0 + 2400).length).toBeGreaterThanOrEqual(5);
  });

  it('a finished step returns its recorded result without calling the model', async () => {
    const p = await prep('unit');
    const before = fake.stats.chat;
    const r = await run(new MockActivityEnvironment(), acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) });
    expect(r.grades.count).toBe(12);
    expect(fake.stats.chat).toBe(before);
  });

  it('cancellation aborts in-flight model requests at once; the retry resumes from the heartbeat and what was flushed', async () => {
    const p = await prep('unit-resume', slow.baseUrl, {
      answer: { concurrency: 4, chunkSize: 4, maxTokens: 16 },
      model: { baseUrl: slow.baseUrl, name: 'fake-model', timeoutSeconds: 30 },
    });
    const { env, beats } = mockEnv();
    const running = run(env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) });
    // After the first 4 answers are written, the next 4 requests are in flight (2.5 s each): cancel then.
    const t = slow.stats.total; // counted as requests arrive (answers come 2.5 s later)
    await waitFor(() => beats.some((b) => (b.d as WorkProgress | undefined)?.flushed === 4), 20_000, 'the first chunk to be flushed');
    await waitFor(() => slow.stats.total - t === 8, 5_000, 'the next 4 requests to be in flight');
    const asked = slow.stats.total;
    const t0 = Date.now();
    env.cancel();
    await expect(running).rejects.toBeInstanceOf(CancelledFailure);
    expect(Date.now() - t0).toBeLessThan(1500); // not the 2.5 s the requests in flight would take
    const last = beats.at(-1)!.d as WorkProgress;
    expect(last.flushed).toBe(4);

    // The retry (attempt 2, with the last heartbeat) asks only what was not written.
    const retry = mockEnv({ attempt: 2, heartbeatDetails: last });
    const r = await run(retry.env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) });
    expect(r.grades.count).toBe(12);
    expect(slow.stats.total - asked).toBe(8);
    // Its heartbeats say it resumed with 4 items already done.
    expect(retry.beats.some((b) => (b.d as WorkProgress | undefined)?.resumed === 4)).toBe(true);
  });

  it('refuses to resume when the heartbeat and the store disagree (workers not sharing one store): StoreNotShared, not retried', async () => {
    const p = await prep('unit-mismatch');
    const previous: WorkProgress = {
      phase: 'answer-grade shard 0',
      done: 8,
      flushed: 8,
      total: 12,
      resumed: 0,
      failed: 0,
      retries: 0,
      concurrency: 4,
      startedAt: Date.now(),
    };
    const { env } = mockEnv({ attempt: 2, heartbeatDetails: previous });
    const e = await failureOf(run(env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) }));
    expect(e).toMatchObject({ name: 'ApplicationFailure', type: 'StoreNotShared', nonRetryable: true });
    expect(e.message).toMatch(/flushed 8 items .* but the store has 0: do all workers use the same artifact store\?/);
  });

  it('train heartbeats step and loss; a second attempt meanwhile is TrainerBusy; cancellation stops the trainer process group', async () => {
    const p = await prep('unit-train', fake.baseUrl, { train: { epochs: 100, saveSteps: 50 } });
    const grades = [];
    for (const shard of [0, 1])
      grades.push((await run(new MockActivityEnvironment(), acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard, model: base(p) })).grades);
    const f = await run(new MockActivityEnvironment(), acts.filter, { ctx: p.ctx, prepared: p, grades });
    expect(f.trainSet.count).toBe(f.kept);
    expect(f.kept).toBeGreaterThan(4);

    // The trainer is a parent that runs the fake trainer as its own child and ignores SIGTERM itself:
    // only a signal to the whole process group reaches the child.
    const pids = join(dir, 'trainer-pids.json');
    const parent = join(dir, 'parent-trainer.js');
    writeFileSync(
      parent,
      `const { spawn } = require('child_process');\n` +
        `process.on('SIGTERM', () => {});\n` +
        `const c = spawn(process.execPath, [${JSON.stringify(FAKE_TRAINER[1])}, ...process.argv.slice(2)], { stdio: 'inherit' });\n` +
        `require('fs').writeFileSync(${JSON.stringify(pids)}, JSON.stringify({ parent: process.pid, child: c.pid }));\n` +
        `c.on('exit', (code) => process.exit(code === null ? 1 : code));\n`,
    );
    const trainActs = createActivities({ ...deps(), trainer: ['node', parent] });
    const { env, beats } = mockEnv();
    const running = run(env, trainActs.train, { ctx: p.ctx, trainSet: f.trainSet });
    await waitFor(() => beats.some((b) => ((b.d as TrainProgressDetails | undefined)?.step ?? 0) >= 3), 30_000, 'training progress heartbeats');
    const progress = beats.at(-1)!.d as TrainProgressDetails;
    expect(progress).toMatchObject({ phase: 'train', device: 'cpu', precision: 'fp32' });
    expect(progress.totalSteps).toBe(Math.ceil(f.kept / 4) * 100);
    expect(typeof progress.loss).toBe('number');
    const { parent: parentPid, child } = JSON.parse(readFileSync(pids, 'utf8')) as { parent: number; child: number };
    expect(isAlive(parentPid) && isAlive(child)).toBe(true);

    // Another attempt of the same training (a retry, another host) while this one lives: busy, retried later.
    const busy = await failureOf(run(mockEnv().env, trainActs.train, { ctx: p.ctx, trainSet: f.trainSet }));
    expect(busy).toMatchObject({ name: 'ApplicationFailure', type: 'TrainerBusy', nonRetryable: false });
    expect(busy.message).toMatch(/held by worker pid \d+ on this host \(training of run unit-train\)/);
    expect(busy.nextRetryDelay).toMatch(/^\d+s$/);
    expect(JSON.parse(readFileSync(pids, 'utf8')).child).toBe(child); // no second trainer was started

    const t0 = Date.now();
    env.cancel();
    await expect(running).rejects.toBeInstanceOf(CancelledFailure);
    await waitFor(() => !isAlive(child) && !isAlive(parentPid), 10_000, 'the trainer and its child to stop');
    expect(Date.now() - t0).toBeLessThan(8000);
    // The lease is given back: the next attempt may train at once.
    const s = await openStore(store);
    const leases = await s.listDocs(`leases/${runKey('unit-train')}`);
    expect(leases.length).toBeGreaterThan(0);
    expect(await s.readDoc(leases.at(-1)!)).toMatchObject({ released: true });
    // One trainer ran (the busy attempt started none), and it was stopped by SIGTERM, not killed later.
    const log = readFileSync(trainerLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(log.map((e) => [e.event, e.pid])).toEqual([
      ['start', child],
      ['exit', child],
    ]);
    expect(log[1]).toMatchObject({ code: 143, signal: 'SIGTERM' });
  });

  it('failures map to Temporal: what can never succeed is not retried and says what to fix', async () => {
    // InvalidInput: the dataset changed after validation and now has a bad line.
    const sub = join(dir, 'unit-invalid');
    mkdirSync(sub);
    writeWorld(sub, world, paraphrases(world.slice(0, 6)));
    writeFileSync(join(sub, 'train.jsonl'), '{"question":"q?","answer":"a"}\n{"question":"no answer"}\n');
    const invalid = await failureOf(
      run(new MockActivityEnvironment(), acts.prepare, { configFile: writeConfig(sub, fake.baseUrl), store, runId: 'unit-invalid' }),
    );
    expect(invalid).toMatchObject({ name: 'ApplicationFailure', type: 'InvalidInput', nonRetryable: true });
    expect(invalid.message).toMatch(/invalid dataset:\n.*train\.jsonl:2: answer: /);

    // PolicyError: an endpoint this worker may not call (whoever started the workflow).
    const polSub = join(dir, 'unit-policy');
    mkdirSync(polSub);
    writeWorld(polSub, world, paraphrases(world.slice(0, 6)));
    const policy = await failureOf(
      run(new MockActivityEnvironment(), acts.prepare, { configFile: writeConfig(polSub, 'https://api.example.com/v1'), store, runId: 'unit-policy' }),
    );
    expect(policy).toMatchObject({ name: 'ApplicationFailure', type: 'PolicyError', nonRetryable: true });
    expect(policy.message).toMatch(
      /model\.baseUrl https:\/\/api\.example\.com\/v1 is not an endpoint this worker may call: add its URL prefix to SLEARN_ALLOWED_ENDPOINTS/,
    );

    // RunIdReused: the same run id with other data.
    await prep('unit-reused');
    const reused = await failureOf(prep('unit-reused', fake.baseUrl, {}, makeWorld(24, 'other')));
    expect(reused).toMatchObject({ name: 'ApplicationFailure', type: 'RunIdReused', nonRetryable: true });
    expect(reused.message).toMatch(/start the new run under another id/);

    // ModelConfigError: the endpoint does not serve the model the config names (404).
    const p = await prep('unit-404', fake.baseUrl, { model: { baseUrl: fake.baseUrl, name: 'no-such-model', timeoutSeconds: 5 } });
    const notFound = await failureOf(run(new MockActivityEnvironment(), acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) }));
    expect(notFound).toMatchObject({ name: 'ApplicationFailure', type: 'ModelConfigError', nonRetryable: true });
    expect(notFound.message).toMatch(/answered 404.*check model\.name "no-such-model" and model\.baseUrl/);
  });

  it('an endpoint that stays overloaded fails the attempt as ModelUnavailable, retried after its Retry-After', async () => {
    let asked = 0;
    const busy: Server = createServer((req, res) => {
      req.resume();
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model', created: 0, owned_by: 'x' }] }));
      }
      asked++;
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(JSON.stringify({ error: { message: 'overloaded', type: 'server_error' } }));
    });
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    try {
      const url = `http://127.0.0.1:${(busy.address() as AddressInfo).port}/v1`;
      const p = await prep('unit-503', url, { shardSize: 1 }, world.slice(0, 2));
      const { env, beats } = mockEnv();
      const t0 = Date.now();
      const e = await failureOf(run(env, acts.answerGradeShard, { ctx: p.ctx, prepared: p, shard: 0, model: base(p) }));
      expect(Date.now() - t0).toBeGreaterThan(4000); // at least Retry-After (1 s) between each of the 5 tries
      expect(e).toMatchObject({ name: 'ApplicationFailure', type: 'ModelUnavailable', nonRetryable: false, nextRetryDelay: '1s' });
      expect(e.message).toMatch(/answered 503/);
      // Asked again in place first (after Retry-After or a longer backoff), then handed to Temporal.
      expect(asked).toBe(5);
      // Waiting between tries (about 8 s) never silenced the heartbeat.
      expect(beats.length).toBeGreaterThanOrEqual(10);
    } finally {
      await new Promise((r) => busy.close(r));
    }
  });

  it('toFailure sorts every error kind once', () => {
    const ok = (e: unknown, expected: Record<string, unknown>) => expect(toFailure(e)).toMatchObject({ name: 'ApplicationFailure', ...expected });
    ok(new InvalidInput('bad'), { type: 'InvalidInput', nonRetryable: true, message: 'bad' });
    ok(new PolicyError('no'), { type: 'PolicyError', nonRetryable: true });
    ok(new RunIdReused('again'), { type: 'RunIdReused', nonRetryable: true });
    ok(new StoreNotShared('split'), { type: 'StoreNotShared', nonRetryable: true });
    ok(new TrainerError('no GPU'), { type: 'TrainerError', nonRetryable: true });
    ok(new TrainerBusy('held', 4200), { type: 'TrainerBusy', nonRetryable: false, nextRetryDelay: '5s' });
    ok(new AdapterNotLoaded('slearn-abc'), { type: 'AdapterNotLoaded', nonRetryable: true });
    ok(new ModelCallError('401', 'fatal', 401), { type: 'ModelConfigError', nonRetryable: true });
    ok(new ModelCallError('429', 'transient', 429, 2.3, true), { type: 'ModelUnavailable', nonRetryable: false, nextRetryDelay: '3s' });
    expect(toFailure(new ModelCallError('500', 'transient', 500))).toMatchObject({ type: 'ModelUnavailable', nextRetryDelay: undefined });
    ok(new Error('disk full'), { type: 'Error', nonRetryable: false, message: 'disk full' });
    const cancelled = new CancelledFailure('stop');
    expect(toFailure(cancelled)).toBe(cancelled);
  });
});
