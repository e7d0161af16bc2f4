import { SingleBar, Presets } from 'cli-progress';
import type { Client } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import { progressQuery } from '../workflows';
import type { Progress, RunResult } from '../schemas/run';
import { progressLine } from './output';

/** Rough share of the whole run per stage, so one bar covers it. */
function overall(p: Progress): number {
  const shards = p.shardsTotal ? p.shardsDone / p.shardsTotal : 0;
  switch (p.stage) {
    case 'prepare':
      return 0;
    case 'answer-grade':
      return 60 * shards;
    case 'filter':
      return 60;
    case 'train':
      return 60 + 30 * (p.train?.totalSteps ? p.train.step / p.train.totalSteps : 0);
    case 'evaluate':
      return 92;
    default:
      return 100;
  }
}

/** Follows a run until it closes: a progress bar on a terminal, plain lines otherwise. */
export async function watchRun(client: Client, runId: string, out: NodeJS.WriteStream = process.stderr, intervalMs = 1000): Promise<RunResult> {
  const handle = client.workflow.getHandle(runId);
  const tty = Boolean(out.isTTY);
  const bar = tty ? new SingleBar({ format: '{bar} {percentage}% | {line}', hideCursor: true, stream: out }, Presets.shades_classic) : undefined;
  bar?.start(100, 0, { line: 'starting' });
  let lastLine = '';
  const resultP = handle.result() as Promise<RunResult>;
  let settled = false;
  resultP.then(
    () => (settled = true),
    () => (settled = true),
  );
  try {
    while (!settled) {
      try {
        const p = await handle.query(progressQuery);
        const line = progressLine(p);
        if (bar) bar.update(Math.round(overall(p)), { line });
        else if (line !== lastLine) out.write(`${line}\n`);
        lastLine = line;
      } catch {
        /* no worker answering queries right now; keep waiting */
      }
      await Promise.race([new Promise((r) => setTimeout(r, intervalMs)), resultP.catch(() => undefined)]);
    }
    const result = await resultP;
    bar?.update(100, { line: 'done' });
    return result;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      const cause = (e.cause as Error | undefined)?.cause as Error | undefined;
      throw new Error(`run ${runId} failed: ${cause?.message ?? (e.cause as Error)?.message ?? e.message}`);
    }
    throw e;
  } finally {
    bar?.stop();
  }
}
