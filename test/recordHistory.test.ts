import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { temporal as proto } from '@temporalio/proto';
import { temporalBinary } from '../src/temporal/devServer';
import { startRun } from '../src/client';
import { startFakeModel } from './support/fakeModel';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const EventType = proto.api.enums.v1.EventType;

/**
 * Records replay fixtures from a real run: `RECORD_HISTORY=v2 npx jest test/recordHistory` writes
 * test/fixtures/histories/selfLearning-v2-*.json (and removes that version's older recordings).
 * Without RECORD_HISTORY it records into a temp dir and checks the recording is complete and
 * replays, so the recorder itself stays working.
 */
it('records the histories of a run, across continue-as-new, that replay against the current code', async () => {
  const version = process.env.RECORD_HISTORY;
  const dir = tempDir();
  const out = version ? join(__dirname, 'fixtures', 'histories') : dir;
  const world = makeWorld(12);
  const fake = await startFakeModel({ items: world, knownPercent: 50 });
  const server = await temporal(dir, { dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 } });
  const stop = await inProcessWorker(server.address);
  try {
    writeWorld(dir, world, paraphrases(world.slice(0, 6)));
    const handle = await startRun(server.client, writeConfig(dir, fake.baseUrl, { shardSize: 2 }), { runId: 'record' });
    const result = await handle.result();
    expect(result.status).toBe('completed');
    expect(result.continuedAsNew).toBeGreaterThanOrEqual(1);
    const runs = [];
    for await (const w of server.client.workflow.list({ query: `WorkflowId = 'record'` })) runs.push(w);
    runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
    expect(runs.length).toBe(result.continuedAsNew + 1);
    if (version) for (const f of readdirSync(out).filter((f) => f.startsWith(`selfLearning-${version}-`))) rmSync(join(out, f));
    const kinds = new Set<string>();
    for (const [i, r] of runs.entries()) {
      // The CLI's JSON is the format the web UI downloads and historyFromJSON reads.
      const shown = spawnSync(
        temporalBinary(),
        ['workflow', 'show', '--workflow-id', 'record', '--run-id', r.runId, '--address', server.address, '--output', 'json'],
        { encoding: 'utf8' },
      );
      expect(shown.status).toBe(0);
      const history = historyFromJSON(JSON.parse(shown.stdout));
      expect(history.events?.length).toBeGreaterThan(5);
      for (const e of history.events ?? []) {
        const scheduled = e.activityTaskScheduledEventAttributes?.activityType?.name;
        if (scheduled) kinds.add(scheduled);
      }
      const last = history.events!.at(-1)!.eventType;
      expect(last).toBe(i < runs.length - 1 ? EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW : EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
      // What is recorded replays against the code that recorded it.
      await Worker.runReplayHistory({ workflowsPath: require.resolve('../src/workflows') }, history, `record-${i + 1}`);
      writeFileSync(join(out, `selfLearning-${version ?? 'check'}-${i + 1}.json`), shown.stdout);
    }
    // Between them, the recordings exercise every step of the workflow.
    expect([...kinds].sort()).toEqual([
      'answerGradeShard',
      'compareModels',
      'evaluatePass',
      'filter',
      'prepare',
      'promote',
      'report',
      'resolveCurrent',
      'stageAdapter',
      'train',
    ]);
  } finally {
    await stop();
    await server.stop();
    await fake.close();
  }
});
