import { SingleBar, Presets } from 'cli-progress';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { runStatus } from '../client';
import type { RunResult } from '../schemas/run';
import { fancy, progressLine, stageProgress } from './output';

/**
 * Follows a run until it closes. On a terminal: one progress bar per stage that moves per item
 * (answering, evaluating) or per step (training), with rate and ETA. In a pipe or with NO_COLOR:
 * plain lines, one when the stage changes and at most one every `plainEveryMs` otherwise.
 * Everything comes from a query and the running activities' heartbeats: no history events.
 */
export async function watchRun(
  client: Client,
  runId: string,
  opts: { out?: NodeJS.WriteStream; intervalMs?: number; plainEveryMs?: number } = {},
): Promise<RunResult> {
  const out = opts.out ?? process.stderr;
  const intervalMs = opts.intervalMs ?? 1000;
  const tty = fancy(out);
  const handle = client.workflow.getHandle(runId);
  const bar = tty
    ? new SingleBar(
        { format: '{stage} {bar} {value}/{total} | {rate}/s | ETA {eta_formatted} | {detail}', hideCursor: true, stream: out, etaBuffer: 30 },
        Presets.shades_classic,
      )
    : undefined;
  let stage = '';
  let lastPlain = 0;
  let lastLine = '';
  let started = Date.now();
  let startDone = 0;
  const resultP = handle.result() as Promise<RunResult>;
  let settled = false;
  // Wakes the loop when the run ends; its outcome (a result or a failure) is read from resultP below.
  const ended = resultP.then(
    () => void (settled = true),
    () => void (settled = true),
  );
  let lastUnavailable = '';
  try {
    while (!settled) {
      try {
        const s = await runStatus(client, runId);
        const sp = stageProgress(s);
        if (sp.stage !== stage) {
          stage = sp.stage;
          started = Date.now();
          startDone = sp.done;
          if (bar) {
            bar.stop();
            bar.start(Math.max(1, sp.total), sp.done, { stage: stage.padEnd(12), detail: sp.detail, rate: '0.0' });
          } else out.write(`${progressLine(s)}\n`);
        }
        const rate = ((sp.done - startDone) / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1);
        if (bar) {
          bar.setTotal(Math.max(1, sp.total));
          bar.update(sp.done, { stage: stage.padEnd(12), detail: sp.detail, rate });
        } else {
          const line = progressLine(s);
          if (line !== lastLine && Date.now() - lastPlain >= (opts.plainEveryMs ?? 10_000)) {
            out.write(`${line}\n`);
            lastPlain = Date.now();
            lastLine = line;
          }
        }
      } catch (e) {
        // Temporal unreachable for a moment: say so once, and keep waiting.
        const why = `status unavailable, still waiting: ${(e as Error).message}`;
        if (why !== lastUnavailable) out.write(`${why}\n`);
        lastUnavailable = why;
      }
      await Promise.race([new Promise((r) => setTimeout(r, intervalMs)), ended]);
    }
    return await resultP;
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      const cause = e.cause?.cause as Error | undefined;
      throw new Error(`run ${runId} failed: ${cause?.message ?? (e.cause as Error)?.message ?? e.message}`, { cause: e });
    }
    throw e;
  } finally {
    bar?.stop();
  }
}
