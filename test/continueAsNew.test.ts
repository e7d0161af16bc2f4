import { join } from 'node:path';
import { startRun } from '../src/client';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

/** Runs the same dataset on two servers: one that suggests continue-as-new early, one that doesn't. */
async function runOn(dynamicConfig: Record<string, number>, runId: string): Promise<{ result: RunResult; historyEvents: number[] }> {
  const dir = tempDir();
  const world = makeWorld(48);
  const fake: FakeModel = await startFakeModel({ items: world, knownPercent: 40 });
  const server = await temporal(dir, { dynamicConfig });
  const stop = await inProcessWorker(server.address);
  try {
    writeJsonl(join(dir, 'train.jsonl'), world);
    const handle = await startRun(server.client, writeConfig(dir, fake.baseUrl, { shardSize: 2, shardConcurrency: 2 }), { runId });
    const result = (await handle.result()) as RunResult;
    const historyEvents: number[] = [];
    for await (const w of server.client.workflow.list({ query: `WorkflowId = '${runId}'` })) historyEvents.push(w.historyLength ?? 0);
    return { result, historyEvents };
  } finally {
    await stop();
    await server.stop();
    await fake.close();
  }
}

describe('continue-as-new keeps history small', () => {
  it('continues as new under a low history limit and ends with the same outputs', async () => {
    const low = await runOn({ 'limit.historyCount.suggestContinueAsNew': 60 }, 'can-low');
    const normal = await runOn({}, 'can-normal');
    expect(low.result.continuedAsNew).toBeGreaterThanOrEqual(1);
    expect(normal.result.continuedAsNew).toBe(0);
    expect(low.historyEvents.length).toBe(low.result.continuedAsNew + 1);
    // Same data in, same decisions, training set and evaluation out.
    expect(low.result.counts).toEqual(normal.result.counts);
    expect(low.result.filter.trainSet.sha256).toBe(normal.result.filter.trainSet.sha256);
    expect(low.result.filter.decisions.sha256).toBe(normal.result.filter.decisions.sha256);
    expect(low.result.evaluation.base).toEqual(normal.result.evaluation.base);
    expect(low.result.evaluation.tuned).toEqual(normal.result.evaluation.tuned);
  });
});
