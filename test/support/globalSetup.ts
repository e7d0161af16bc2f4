import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';

/**
 * Bundles the workflow once for the whole test run and hands it to every worker through
 * SLEARN_WORKFLOW_BUNDLE (in-process workers, and the worker processes the tests spawn and kill):
 * webpack took 6-8 s per worker start here, and the suite starts dozens of workers.
 */
export default async function globalSetup(): Promise<void> {
  if (process.env.SLEARN_WORKFLOW_BUNDLE) return;
  const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error };
  const { code } = await bundleWorkflowCode({ workflowsPath: join(__dirname, '..', '..', 'src', 'workflows', 'index.ts'), logger: quiet });
  const file = join(tmpdir(), `slearn-workflow-bundle-${process.pid}.js`);
  writeFileSync(file, code);
  process.env.SLEARN_WORKFLOW_BUNDLE = file;
  process.env.SLEARN_WORKFLOW_BUNDLE_OWNED = '1';
}
