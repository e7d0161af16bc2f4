import type { Client } from '@temporalio/client';
import { audit, startRun } from '../src/client';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { expectSameOutputs, makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

interface Outcome {
  result: RunResult;
  /** History length of each execution of the run's continue-as-new chain, oldest first. */
  historyEvents: number[];
  /** The activities each execution scheduled, in order. */
  activities: string[][];
  /** Shards prepare cut the training items into. */
  shards: number;
}

/** What the last executions of a chain did: for the message of a run that never ends. */
async function lastExecutions(client: Client, runId: string, n = 3): Promise<string> {
  const execs = [];
  for await (const w of client.workflow.list({ query: `WorkflowId = '${runId}'` })) execs.push(w);
  execs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  const out = [`${execs.length} executions; the last ones scheduled:`];
  for (const e of execs.slice(-n)) {
    const h = await client.workflow.getHandle(runId, e.runId).fetchHistory();
    out.push(
      (h.events ?? [])
        .map((x) => x.activityTaskScheduledEventAttributes?.activityType?.name)
        .filter(Boolean)
        .join(', '),
    );
  }
  return out.join('\n  ');
}

/** Runs the same dataset on a fresh server with the given dynamic config; fails after `deadlineMs`. */
async function runOn(dynamicConfig: Record<string, number>, runId: string, deadlineMs = 120_000): Promise<Outcome> {
  const dir = tempDir();
  const world = makeWorld(48);
  const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 40 });
  const server = await temporal(dir, { dynamicConfig });
  const stop = await inProcessWorker(server.address);
  try {
    writeWorld(dir, world, paraphrases(world.slice(0, 12)));
    const handle = await startRun(server.client, writeConfig(dir, fake.baseUrl, { shardSize: 2, shardConcurrency: 2 }), { runId });
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      handle.result(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          void lastExecutions(server.client, runId).then((what) => {
            reject(new Error(`run ${runId} did not finish in ${deadlineMs / 1000}s: ${what}`));
            void handle.terminate('test deadline').catch(() => undefined);
          }, reject);
        }, deadlineMs);
      }),
    ]).finally(() => clearTimeout(timer));
    const a = await audit(server.client, runId);
    const shards = (a.lineage.find((s) => s.step === 'prepare')!.result as { shards: number }).shards;
    return { result, historyEvents: a.runs.map((r) => r.events), activities: a.runs.map((r) => r.activities.map((x) => x.activity)), shards };
  } finally {
    await stop();
    await server.stop();
    await fake.close();
  }
}

/** Nothing is done twice across the chain: every shard once, each other step once. */
function expectEachStepOnce(o: Outcome): void {
  const all = o.activities.flat();
  expect(o.shards).toBeGreaterThanOrEqual(20);
  expect(all.filter((a) => a === 'answerGradeShard')).toHaveLength(o.shards);
  for (const step of ['prepare', 'resolveCurrent', 'filter', 'train', 'compareModels', 'promote', 'report'])
    expect({ step, n: all.filter((a) => a === step).length }).toEqual({ step, n: 1 });
}

describe('continue-as-new keeps history small', () => {
  let normal: Outcome;
  beforeAll(async () => {
    normal = await runOn({}, 'can-normal');
  });

  it('a run without the suggestion stays in one execution (the reference)', () => {
    expect(normal.result.continuedAsNew).toBe(0);
    expect(normal.historyEvents).toHaveLength(1);
    expectEachStepOnce(normal);
  });

  it('continues as new between shards under a low history limit, and ends with the same outputs', async () => {
    const low = await runOn({ 'limit.historyCount.suggestContinueAsNew': 60 }, 'can-low');
    expect(low.result.continuedAsNew).toBeGreaterThanOrEqual(2);
    expect(low.historyEvents).toHaveLength(low.result.continuedAsNew + 1);
    // Each execution stays near the suggested limit (in-flight shards finish first), far below one whole run.
    expect(Math.max(...low.historyEvents)).toBeLessThan(100);
    expect(normal.historyEvents[0]).toBeGreaterThan(2 * Math.max(...low.historyEvents));
    // A continuation picks up at the next shard: executions that start in the middle of answering.
    expect(low.activities.slice(1).some((acts) => acts[0] === 'answerGradeShard')).toBe(true);
    expectEachStepOnce(low);
    // Same data in, same counts, decisions, training set, training and evaluation out.
    expectSameOutputs(low.result, normal.result);
    expect(low.result.promotion).toEqual(normal.result.promotion);
  });

  it('continues as new at stage boundaries too, under a limit lower than one stage, and ends with the same outputs', async () => {
    const low = await runOn({ 'limit.historyCount.suggestContinueAsNew': 25 }, 'can-stages', 60_000);
    expect(low.historyEvents).toHaveLength(low.result.continuedAsNew + 1);
    // Executions that begin with a later stage: continued at the boundary after answering, filtering or training.
    const firsts = low.activities.slice(1).map((acts) => acts[0]);
    expect(firsts.some((a) => a && a !== 'answerGradeShard')).toBe(true);
    expectEachStepOnce(low);
    expectSameOutputs(low.result, normal.result);
    expect(low.result.promotion).toEqual(normal.result.promotion);
  });
});
