import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';

const FIXTURES = join(__dirname, 'fixtures', 'histories');

/**
 * Histories recorded from shipped workflow versions must replay against the current code: a change
 * that would break a running workflow (without `patched()`) fails here, before it reaches production.
 */
describe('replay of recorded histories', () => {
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.json'));

  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(1);
  });

  it.each(files)('%s replays against the current workflow code', async (file) => {
    const history = historyFromJSON(JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')));
    await expect(Worker.runReplayHistory({ workflowsPath: require.resolve('../src/workflows') }, history, file)).resolves.toBeUndefined();
  });

  it('detects a workflow change that would break running workflows', async () => {
    // Same history, against a workflow that schedules something else first: replay must refuse it.
    const history = historyFromJSON(JSON.parse(readFileSync(join(FIXTURES, files[0]), 'utf8')));
    await expect(
      Worker.runReplayHistory({ workflowsPath: require.resolve('./fixtures/changedWorkflow') }, history, 'changed'),
    ).rejects.toThrow();
  });
});
