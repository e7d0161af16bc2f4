import type { Level } from '../schemas/config';
import type { ItemGrade } from '../schemas/results';
import type { ModelUse, Prepared, ShardResult, StepCtx } from '../schemas/run';
import { numbered } from '../store/backend';
import { fingerprint } from '../store/steps';
import { answerAndGradeSet } from './answering';
import type { StepEnv } from './env';
import { shardRef } from './prepare';
import { emptyLevels, runConfig } from './step';

export interface ShardInput {
  ctx: StepCtx;
  prepared: Pick<Prepared, 'shardIndex'>;
  shard: number;
  /** The model that answers: the base, or the current adapter of a chained run. */
  model: ModelUse;
}

/** Answers and grades one shard (one activity: fewer, larger steps keep the history small). */
export async function answerGradeShard(env: StepEnv, { ctx, prepared, shard, model }: ShardInput): Promise<ShardResult> {
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  const items = await shardRef(store, prepared, shard);
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
  // Live known/unknown of this attempt, shown by `slearn status` while the shard runs.
  const live = { known: 0, unknown: 0 };
  return answerAndGradeSet(env, store, config, {
    ctx,
    step: `answer-grade-${numbered(shard)}`,
    fp,
    inputs: { items },
    items,
    model,
    phase: `answer-grade shard ${shard}`,
    window: config.answer.chunkSize,
    concurrency: config.answer.concurrency,
    live: (g) => {
      if (g.status === 'graded') live[g.greedy?.correct ? 'known' : 'unknown']++;
      return live;
    },
    summarise: (grades, ref) => shardResult(shard, grades, ref),
  });
}

/** A shard's counts and levels: what the workflow adds up (the grades themselves stay in the store). */
function shardResult(shard: number, grades: ItemGrade[], ref: ShardResult['grades']): ShardResult {
  const levels = emptyLevels();
  let ungradeable = 0;
  for (const g of grades) {
    if (g.status === 'ungradeable') ungradeable++;
    else levels[g.level as Level]++;
  }
  const known = levels.known + levels.maybeKnown;
  return {
    shard,
    grades: ref,
    counts: {
      answered: grades.filter((g) => g.greedy || g.answer !== undefined).length,
      graded: grades.length - ungradeable,
      known,
      unknown: grades.length - ungradeable - known,
      ungradeable,
    },
    levels,
  };
}
