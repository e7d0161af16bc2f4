import type { Config, Level } from '../schemas/config';
import { LEVELS } from '../schemas/config';
import type { Item } from '../schemas/dataset';
import type { LevelCounts, ModelUse, Prepared, ShardResult, StepCtx } from '../schemas/run';
import { fingerprint, once, runPrefix } from '../store/steps';
import type { Store } from '../store/store';
import { requireAdapter } from './adapters';
import { answerAndGrade, clients, ungradeable, type ItemGrade } from './answering';
import type { StepEnv } from './env';
import { shardRef } from './prepare';
import { runItems, type WorkProgress } from './work';

export const pad = (n: number) => String(n).padStart(6, '0');

export function emptyLevels(): LevelCounts {
  return Object.fromEntries(LEVELS.map((l) => [l, 0])) as LevelCounts;
}

export async function loadConfig(store: Store, ctx: StepCtx): Promise<Config> {
  return store.json<Config>(ctx.config);
}

/** Where a step's in-progress parts live: keyed by its fingerprint, so other input never mixes in. */
export const workDir = (runId: string, step: string, fp: string) => `${runPrefix(runId)}/work/${step}-${fp.slice(0, 16)}`;

export interface ShardInput {
  ctx: StepCtx;
  prepared: Pick<Prepared, 'shardIndex'>;
  shard: number;
  /** The model that answers: the base, or the current adapter of a chained run. */
  model: ModelUse;
}

/** Deletes a finished step's parts: its result is in the store, a retry will not need them. */
export async function clearWork(store: Store, dir: string): Promise<void> {
  for (const key of await store.listDocs(dir)) await store.deleteDoc(key);
}

/** Answers and grades one shard (one activity: fewer, larger steps keep the history small). */
export async function answerGradeShard(env: StepEnv, { ctx, prepared, shard, model }: ShardInput): Promise<ShardResult> {
  const store = await env.store(ctx.store);
  const config = await loadConfig(store, ctx);
  const items = await shardRef(store, prepared, shard);
  const step = `answer-grade-${pad(shard)}`;
  const fp = fingerprint(
    'answer-grade',
    items.sha256,
    config.model.baseUrl,
    model.name,
    model.adapter?.sha256 ?? null,
    config.answer,
    config.grader,
    config.train.seed,
  );
  const dir = workDir(ctx.runId, step, fp);
  const result = await once(store, ctx, step, fp, { items }, async () => {
    const list = await store.jsonlAll<Item>(items);
    const c = clients(env, config);
    await requireAdapter(c.model, model.name, env.signal);
    const answer = answerAndGrade(config, c, model.name);
    const live = { known: 0, unknown: 0 };
    const work = async (item: Item, signal: AbortSignal) => {
      const g = await answer(item, signal);
      if (g.status === 'graded') live[g.greedy?.correct ? 'known' : 'unknown']++;
      return g;
    };
    const grades = await runItems<Item, ItemGrade>({
      store,
      dir,
      phase: `answer-grade shard ${shard}`,
      items: list,
      id: (x) => x.id,
      window: config.answer.chunkSize,
      concurrency: config.answer.concurrency,
      work,
      fail: (item, error) => ungradeable(item.id, error),
      giveUp: env.giveUp,
      signal: env.signal,
      previous: env.previous as WorkProgress | undefined,
      onProgress: (p) => env.progress({ ...p, ...live }),
    });
    const ref = await store.putJsonl(grades);
    const levels = emptyLevels();
    let ungradeableCount = 0;
    for (const g of grades) {
      if (g.status === 'ungradeable') ungradeableCount++;
      else levels[g.level as Level]++;
    }
    const known = levels.known + levels.maybeKnown;
    const result: ShardResult = {
      shard,
      grades: ref,
      counts: {
        answered: grades.filter((g) => g.greedy || g.answer !== undefined).length,
        graded: grades.length - ungradeableCount,
        known,
        unknown: grades.length - ungradeableCount - known,
        ungradeable: ungradeableCount,
      },
      levels,
    };
    return { outputs: { grades: ref }, result };
  });
  // The parts are no longer needed once the step record exists; removing them is not the step's work.
  void clearWork(store, dir).catch(() => undefined);
  return result;
}
