/** The progress line of `slearn run --wait` / `watch`, from the workflow's counts and the running shards' heartbeats. */
import { stageProgress, summaryTable, table } from '../src/cli/output';
import type { RunStatus } from '../src/client';
import type { WorkProgress } from '../src/schemas/progress';
import type { RunResult } from '../src/schemas/run';

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

describe('tables', () => {
  const reason =
    'refused: tuned 22.5% vs base 10.0% on 80 held-out items: gain 12.5 points; forgot 76.9% of 13 known items (at most 10.0% allowed); 14 fixed, 4 broken, McNemar p=0.031';
  const result: RunResult = {
    runId: 'agri-demo-20261130-091359-530745',
    store: '/tmp/store',
    status: 'completed',
    counts: { items: 306, answered: 306, graded: 306, known: 25, unknown: 281, ungradeable: 0 },
    promotion: { promoted: false, reason },
    continuedAsNew: 0,
  };
  const words = (s: string) =>
    s
      .replace(/[│┌┐└┘├┤┬┴┼─]/g, ' ')
      .split(/\s+/)
      .filter(Boolean);

  it('fit the width they are given, wrapping long text at words, losing none of it; the report path whole below', () => {
    const report = '/home/someone/projects/slearn/.slearn/runs/agri-demo-20261130-091359-530745/report.html';
    for (const width of [80, 120]) {
      const all = summaryTable(result, report, width).split('\n');
      // The path on a line of its own, whole, so it can be copied or clicked even where it is wider than the screen.
      expect(all.at(-1)).toBe(`report: ${report}`);
      const lines = all.slice(0, -1);
      expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(width);
      // Every word of the reason is there, whole and in order.
      const text = words(lines.join('\n')).join(' ');
      expect(text).toContain(words(reason).join(' ').slice(0, 60));
      for (const w of words(reason)) expect(text).toContain(w);
    }
    expect(summaryTable(result, undefined, 80).split('\n').length).toBeGreaterThan(summaryTable(result, undefined, 400).split('\n').length);
  });

  it('that already fit are drawn at their natural width', () => {
    const t = table(['a', 'b'], 80);
    t.push(['x', 'y']);
    expect(t.toString().split('\n')[0]).toBe('┌───┬───┐');
  });
});
