import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { temporalBinary } from '../src/temporal/devServer';
import { startRun } from '../src/client';
import { startFakeModel } from './support/fakeModel';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

/**
 * Records replay fixtures from a real run: `RECORD_HISTORY=v2 npx jest test/recordHistory` writes
 * test/fixtures/histories/selfLearning-v2-*.json. Without RECORD_HISTORY it records into a temp dir
 * and checks the recording is complete, so the recorder itself stays working.
 */
it('records the histories of a run, across continue-as-new', async () => {
  const version = process.env.RECORD_HISTORY;
  const dir = tempDir();
  const out = version ? join(__dirname, 'fixtures', 'histories') : dir;
  const world = makeWorld(12);
  const fake = await startFakeModel({ items: world, knownPercent: 50 });
  const server = await temporal(dir, { dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 } });
  const stop = await inProcessWorker(server.address);
  try {
    writeJsonl(join(dir, 'train.jsonl'), world);
    const handle = await startRun(server.client, writeConfig(dir, fake.baseUrl, { shardSize: 2 }), { runId: 'record' });
    await handle.result();
    const runs = [];
    for await (const w of server.client.workflow.list({ query: `WorkflowId = 'record'` })) runs.push(w);
    runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
    expect(runs.length).toBeGreaterThanOrEqual(2);
    for (const [i, r] of runs.entries()) {
      // The CLI's JSON is the format the web UI downloads and historyFromJSON reads.
      const shown = spawnSync(temporalBinary(), ['workflow', 'show', '--workflow-id', 'record', '--run-id', r.runId, '--address', server.address, '--output', 'json'], { encoding: 'utf8' });
      expect(shown.status).toBe(0);
      const history = historyFromJSON(JSON.parse(shown.stdout));
      expect(history.events?.length).toBeGreaterThan(5);
      writeFileSync(join(out, `selfLearning-${version ?? 'check'}-${i + 1}.json`), shown.stdout);
    }
  } finally {
    await stop();
    await server.stop();
    await fake.close();
  }
});
