/** The progress line of `slearn run --wait` / `watch`, from the workflow's counts and the running shards' heartbeats. */
import { stageProgress } from '../src/cli/output';
import type { RunStatus } from '../src/client';
import type { WorkProgress } from '../src/schemas/progress';

const shard = (phase: string, done: number, known: number, unknown: number): WorkProgress => ({
  phase,
  done,
  flushed: done,
  total: 500,
  resumed: 0,
  failed: 0,
  retries: 0,
  concurrency: 8,
  startedAt: 0,
  known,
  unknown,
});

describe('progress line', () => {
  it('counts known and unknown as items are graded, not only when a shard ends', () => {
    const status: RunStatus = {
      runId: 'r',
      status: 'RUNNING',
      progress: {
        runId: 'r',
        stage: 'answer-grade',
        shardsDone: 1,
        shardsTotal: 3,
        counts: { items: 1500, answered: 500, graded: 500, known: 120, unknown: 380, ungradeable: 0 },
        continuedAsNew: 0,
        startedAt: 0,
      },
      pending: [
        { activity: 'answerGradeShard', attempt: 1, state: 'STARTED', progress: shard('answer-grade shard 1', 40, 10, 30) },
        { activity: 'answerGradeShard', attempt: 1, state: 'STARTED', progress: shard('answer-grade shard 2', 25, 5, 20) },
      ],
    };
    expect(stageProgress(status)).toEqual({ stage: 'answer-grade', done: 565, total: 1500, detail: 'known 135 · unknown 430' });
  });
});
