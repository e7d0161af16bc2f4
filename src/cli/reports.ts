import { join } from 'node:path';
import { STATE_DIR } from '../paths';
import type { RunResult } from '../schemas/run';
import { openStore } from '../store/open';
import { runKey } from '../store/steps';

/** Where people look: `.slearn/runs/<run>/report.{md,html}`, copied from the store (wherever the report step ran). */
export function localRunDir(runId: string): string {
  return join(STATE_DIR, 'runs', runKey(runId));
}

export async function saveReport(r: RunResult, dir = localRunDir(r.runId)): Promise<string | undefined> {
  if (!r.report) return undefined;
  const store = await openStore(r.store);
  await store.download(r.report.markdown, join(dir, 'report.md'));
  await store.download(r.report.html, join(dir, 'report.html'));
  return join(dir, 'report.html');
}
