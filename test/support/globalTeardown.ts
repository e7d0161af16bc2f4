import { rmSync } from 'node:fs';

/** Removes the bundle globalSetup wrote (not one the caller passed in). */
export default async function globalTeardown(): Promise<void> {
  if (process.env.SLEARN_WORKFLOW_BUNDLE_OWNED === '1' && process.env.SLEARN_WORKFLOW_BUNDLE) rmSync(process.env.SLEARN_WORKFLOW_BUNDLE, { force: true });
}
