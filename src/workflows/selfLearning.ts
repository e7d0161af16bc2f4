import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  continueAsNew,
  defineQuery,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  workflowInfo,
} from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type { Activities } from '../activities';
import { FailureType, NON_RETRYABLE } from '../errors';
import type { ModelUse, PassResult, Progress, RunInput, RunResult, RunState, ShardResult, Stage } from '../schemas/run';
import { MODEL_TASK_QUEUE, TRAIN_TASK_QUEUE } from '../schemas/run';

export const progressQuery = defineQuery<Progress>('progress');

/** Well under Temporal's 51,200-event limit, and the 10,240 the issue sets per run of a chain. */
const HISTORY_BUDGET = 8_000;

// Timeouts and retry policies, in one place. Short steps retry quickly; model calls honour the
// endpoint's Retry-After through nextRetryDelay; long steps heartbeat on a ticker, so a dead worker
// is noticed within the heartbeat timeout and a live one never is. Tests shorten the timeout.
function steps(heartbeatTimeout: Duration = '1 minute') {
  const never = NON_RETRYABLE;
  const { prepare, resolveCurrent, filter, compareModels, promote, report } = proxyActivities<Activities>({
    startToCloseTimeout: '2 hours',
    heartbeatTimeout,
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10, nonRetryableErrorTypes: never },
  });
  const { answerGradeShard, evaluatePass } = proxyActivities<Activities>({
    startToCloseTimeout: '12 hours',
    heartbeatTimeout,
    retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 20, nonRetryableErrorTypes: never },
  });
  const { train } = proxyActivities<Activities>({
    taskQueue: TRAIN_TASK_QUEUE,
    startToCloseTimeout: '72 hours',
    heartbeatTimeout,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 20, nonRetryableErrorTypes: never },
  });
  const { stageAdapter } = proxyActivities<Activities>({
    taskQueue: MODEL_TASK_QUEUE,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout,
    retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10, nonRetryableErrorTypes: never },
  });
  return { prepare, resolveCurrent, answerGradeShard, filter, train, stageAdapter, evaluatePass, compareModels, promote, report };
}

/**
 * SLearnLLM as a workflow: answer every question with the model in service, grade the answers,
 * drop what the model already knows, fine-tune on the rest, evaluate base, current and tuned on
 * held-out items (and what the model knew, for forgetting), and promote the tuned model only
 * through the gate. Everything in history is a count or a reference; data stays in the store.
 */
export async function selfLearning(input: RunInput, carried?: RunState): Promise<RunResult> {
  const runId = workflowInfo().workflowId;
  const act = steps(input.heartbeatTimeout as Duration | undefined);
  const state: RunState = carried ?? {
    nextShard: 0,
    progress: {
      runId,
      stage: 'prepare',
      shardsDone: 0,
      shardsTotal: 0,
      counts: { items: 0, answered: 0, graded: 0, known: 0, unknown: 0, ungradeable: 0 },
      continuedAsNew: 0,
      startedAt: Date.now(),
    },
  };
  const progress = state.progress;
  setHandler(progressQuery, () => progress);
  const grades: ShardResult['grades'][] = (state.grades ??= []);

  /** A new stage: shown in the web UI (current details) and in `slearn list` (memo), at a few events per run. */
  const enter = (stage: Stage, details: Record<string, unknown> = {}) => {
    progress.stage = stage;
    setCurrentDetails(
      `**${stage}** · ${progress.counts.graded}/${progress.counts.items} graded · known ${progress.counts.known} · unknown ${progress.counts.unknown}`,
    );
    upsertMemo({ stage, known: progress.counts.known, unknown: progress.counts.unknown, ...details });
  };
  /** At every stage boundary: continue as new before the history grows large, carrying only references. */
  const boundary = async () => {
    const info = workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength > HISTORY_BUDGET) {
      progress.continuedAsNew++;
      await continueAsNew<typeof selfLearning>(input, state);
    }
  };

  // 1. prepare: read today's config and data, validate, store, hold out, shard.
  const prepared = state.prepared ?? (await act.prepare({ ...input, runId }));
  state.prepared = prepared;
  const ctx = prepared.ctx;
  progress.shardsTotal = prepared.shards;
  progress.counts.items = prepared.trainItems;

  // 2. the model in service, and whether anything changed since the last run.
  if (state.current === undefined) {
    const resolved = await act.resolveCurrent({ ctx, dataSha: prepared.dataSha });
    state.current = resolved.current;
    if (resolved.current) progress.current = { version: resolved.current.version!, name: resolved.current.name };
    if (resolved.nothingNew && !input.baseline) {
      enter('done', { outcome: 'nothing-new' });
      const promotion = await act.promote({ ctx, prepared, current: resolved.current, nothingNew: resolved.nothingNew });
      const written = await act.report({ ctx, counts: progress.counts, current: resolved.current, notices: prepared.notices, reason: resolved.nothingNew });
      return {
        runId,
        store: ctx.store,
        status: 'nothing-new',
        counts: progress.counts,
        promotion,
        report: written,
        continuedAsNew: progress.continuedAsNew,
        reason: resolved.nothingNew,
      };
    }
  }
  const current = state.current;

  /**
   * Runs `fn` with `m`'s adapter loaded on the endpoint. A model server that restarted has lost its
   * adapters: the step says so (AdapterNotLoaded) and the adapter is staged again.
   */
  const staged = new Map<string, Promise<{ name: string }>>();
  const stage = (adapter: NonNullable<ModelUse['adapter']>, again = false) => {
    // Once per adapter, however many passes use it; again only when the server lost it.
    if (again || !staged.has(adapter.sha256)) staged.set(adapter.sha256, act.stageAdapter({ store: ctx.store, adapter, endpoint: prepared.endpoint }));
    return staged.get(adapter.sha256)!;
  };
  const withModel = async <R>(m: ModelUse, fn: (m: ModelUse) => Promise<R>): Promise<R> => {
    for (let tries = 0; ; tries++) {
      const loaded = m.adapter ? { ...m, name: (await stage(m.adapter, tries > 0)).name } : m;
      try {
        return await fn(loaded);
      } catch (e) {
        const lost = e instanceof ActivityFailure && e.cause instanceof ApplicationFailure && e.cause.type === FailureType.AdapterNotLoaded;
        if (!lost || tries >= 3) throw e;
      }
    }
  };

  // 3. answer and grade, shard by shard, a bounded number of shards in flight.
  enter('answer-grade');
  const answering: ModelUse = current ?? { label: 'base', name: prepared.endpoint.name };
  const lane = async () => {
    while (state.nextShard < prepared.shards && workflowInfo().historyLength < HISTORY_BUDGET && !workflowInfo().continueAsNewSuggested) {
      const shard = state.nextShard++;
      const r = await withModel(answering, (model) => act.answerGradeShard({ ctx, prepared, shard, model }));
      grades[shard] = r.grades;
      for (const k of ['answered', 'graded', 'known', 'unknown', 'ungradeable'] as const) progress.counts[k] += r.counts[k];
      progress.levels ??= { known: 0, maybeKnown: 0, weaklyKnown: 0, unknown: 0 };
      for (const l of Object.keys(r.levels) as (keyof typeof r.levels)[]) progress.levels[l] += r.levels[l];
      progress.shardsDone++;
    }
  };
  await Promise.all(Array.from({ length: prepared.shardConcurrency }, lane));
  if (grades.filter(Boolean).length < prepared.shards) {
    progress.continuedAsNew++;
    await continueAsNew<typeof selfLearning>(input, state);
  }
  await boundary();

  // 4. filter: the training set is what the model did not know.
  enter('filter');
  state.filter ??= await act.filter({ ctx, prepared, grades, ...(input.baseline ? { baseline: input.baseline } : {}) });
  const filtered = state.filter;
  await boundary();

  // 5. train on its own task queue (a GPU host in production), from the current adapter when there is one.
  enter('train', { trainOn: filtered.kept + filtered.replayed });
  state.train ??= await act.train({
    ctx,
    trainSet: filtered.trainSet,
    ...(filtered.lateSet ? { lateSet: filtered.lateSet } : {}),
    ...(current?.adapter ? { initAdapter: current.adapter } : {}),
  });
  const trained = state.train;
  await boundary();

  // 6. evaluate base, current and tuned on held-out items, and the tuned model on what the model knew.
  enter('evaluate');
  const models: ModelUse[] = [{ label: 'base', name: prepared.endpoint.name }];
  if (current?.adapter) models.push(current);
  const tuned: ModelUse | undefined = trained.adapter ? { label: 'tuned', name: '', adapter: trained.adapter } : undefined;
  if (tuned) models.push(tuned);
  const pass = (set: PassResult['set'], items: typeof prepared.evalItems, m: ModelUse) => withModel(m, (model) => act.evaluatePass({ ctx, set, items, model }));
  if (!state.evaluation) {
    const passes: Promise<PassResult>[] = models.map((m) => pass('eval', prepared.evalItems, m));
    if (tuned && filtered.retention.count) passes.push(pass('retention', filtered.retention, tuned));
    state.evaluation = await act.compareModels({ ctx, evalItems: prepared.evalItems, passes: await Promise.all(passes) });
  }
  const evaluation = state.evaluation;
  await boundary();

  // 7. promote through the gate, and report.
  enter('promote', { accuracy: evaluation.tuned?.accuracy ?? evaluation.base.accuracy });
  const promotion = await act.promote({
    ctx,
    prepared,
    current: current ?? null,
    filter: filtered,
    train: trained,
    evaluation,
    ...(input.baseline ? { baseline: input.baseline } : {}),
  });
  enter('report', { promoted: promotion.promoted });
  const written = await act.report({
    ctx,
    counts: progress.counts,
    levels: progress.levels,
    current: current ?? null,
    filter: filtered,
    train: trained,
    evaluation,
    promotion,
    notices: prepared.notices,
  });
  enter('done', { accuracy: evaluation.tuned?.accuracy ?? evaluation.base.accuracy, promoted: promotion.promoted });
  return {
    runId,
    store: ctx.store,
    status: 'completed',
    counts: progress.counts,
    ...(progress.levels ? { levels: progress.levels } : {}),
    filter: filtered,
    train: trained,
    evaluation,
    promotion,
    report: written,
    continuedAsNew: progress.continuedAsNew,
  };
}
