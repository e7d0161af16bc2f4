import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';

/**
 * One temporary root for the whole run, and one workflow bundle in it.
 *
 * Every directory the tests make (stores of 1 GB of checkpoints, scratch, dev-server databases),
 * and every one the processes they start make, goes through os.tmpdir() or Python's tempfile,
 * which both read TMPDIR: pointing it at a root of our own lets globalTeardown remove all of it.
 * Left in /tmp, a run leaked a few GB, and a day of runs filled the disk.
 *
 * The bundle reaches every worker (in-process, and the worker processes the tests spawn and kill)
 * through SLEARN_WORKFLOW_BUNDLE: webpack took 6-8 s per worker start, and the suite starts dozens.
 */
export default async function globalSetup(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'slearn-jest-'));
  process.env.TMPDIR = root;
  process.env.SLEARN_TEST_TMP = root;
  if (process.env.SLEARN_WORKFLOW_BUNDLE) return;
  const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error };
  const { code } = await bundleWorkflowCode({ workflowsPath: join(__dirname, '..', '..', 'src', 'workflows', 'index.ts'), logger: quiet });
  const file = join(root, 'workflow-bundle.js');
  writeFileSync(file, code);
  process.env.SLEARN_WORKFLOW_BUNDLE = file;
}
