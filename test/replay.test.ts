import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { temporal as proto } from '@temporalio/proto';

const FIXTURES = join(__dirname, 'fixtures', 'histories');
const EventType = proto.api.enums.v1.EventType;
const load = (file: string) => historyFromJSON(JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')));

/**
 * Histories recorded from shipped workflow versions must replay against the current code: a change
 * that would break a running workflow (without `patched()`) fails here, before it reaches production.
 * The v1 recordings were removed with the rewrite of the workflow (a deliberate breaking change:
 * v1 runs must finish on v1 workers); v2 is recorded by test/recordHistory.test.ts.
 */
describe('replay of recorded histories', () => {
  const files = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.json'))
    .sort();

  it('has recorded histories to replay, across a continue-as-new', () => {
    expect(files.length).toBeGreaterThanOrEqual(2);
    const ends = files.map((f) => load(f).events!.at(-1)!.eventType);
    expect(ends).toContain(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW);
    expect(ends).toContain(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
  });

  it.each(files)('%s replays against the current workflow code', async (file) => {
    await expect(Worker.runReplayHistory({ workflowsPath: require.resolve('../src/workflows') }, load(file), file)).resolves.toBeUndefined();
  });

  it('detects a workflow change that would break running workflows', async () => {
    // Same history, against a workflow that schedules something else first: replay must refuse it.
    await expect(Worker.runReplayHistory({ workflowsPath: require.resolve('./fixtures/changedWorkflow') }, load(files[0]), 'changed')).rejects.toMatchObject({
      name: 'DeterminismViolationError',
      message: expect.stringMatching(
        /Nondeterminism error: Activity type of scheduled event 'prepare' does not match activity type of activity command 'filter'/,
      ),
    });
  });
});
