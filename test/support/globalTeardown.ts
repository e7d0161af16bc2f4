import { rmSync } from 'node:fs';

/** Removes the run's temporary root (and the bundle in it); SLEARN_KEEP_TEST_TMP=1 keeps it to look into. */
export default async function globalTeardown(): Promise<void> {
  const root = process.env.SLEARN_TEST_TMP;
  if (!root) return;
  if (process.env.SLEARN_KEEP_TEST_TMP === '1') console.log(`\ntest files kept in ${root}`);
  else rmSync(root, { recursive: true, force: true, maxRetries: 3 });
}
