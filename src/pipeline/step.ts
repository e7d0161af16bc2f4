import type { Config } from '../schemas/config';
import { LEVELS } from '../schemas/config';
import type { LevelCounts, StepCtx } from '../schemas/run';
import { runPrefix } from '../store/steps';
import type { Store } from '../store/store';
import type { StepEnv } from './env';

/** What every step uses besides its environment: its run's config, its work directory in the store, and their cleanup. */

/** The run's config as prepare stored it (validated, paths resolved, overrides merged): every later step reads this one. */
export async function runConfig(store: Store, ctx: StepCtx): Promise<Config> {
  return store.json<Config>(ctx.config);
}

/** Where a step's in-progress parts live: keyed by its fingerprint, so other input never mixes in. */
export const workDir = (runId: string, step: string, fp: string) => `${runPrefix(runId)}/work/${step}-${fp.slice(0, 16)}`;

/** Deletes a finished step's parts: its result is in the store, a retry will not need them. */
export async function clearWork(store: Store, dir: string): Promise<void> {
  for (const key of await store.listDocs(dir)) await store.deleteDoc(key);
}

/**
 * Clears a finished step's parts without holding the step up: they are no longer needed once the
 * step record exists, so a failure here costs only disk space, and says so in the log.
 */
export function clearWorkLater(env: Pick<StepEnv, 'log'>, store: Store, dir: string): void {
  clearWork(store, dir).catch((e: Error) => env.log.warn('work parts left in the store', { dir, error: e.message }));
}

/** Zero items at every knowledge level. */
export function emptyLevels(): LevelCounts {
  return Object.fromEntries(LEVELS.map((l) => [l, 0])) as LevelCounts;
}
