import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  continueAsNew,
  defineQuery,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Duration, RetryPolicy } from '@temporalio/common';
import type { Activities } from '../activities';
import { FailureType, NON_RETRYABLE } from '../errors';
import type {
  EvalResult,
  FilterResult,
  ModelUse,
  PassResult,
  Prepared,
  Progress,
  PromotionDecision,
  RunInput,
  RunResult,
  RunState,
  ShardResult,
  Stage,
  TrainResult,
} from '../schemas/run';
import { MODEL_TASK_QUEUE, TRAIN_TASK_QUEUE } from '../schemas/run';

export const progressQuery = defineQuery<Progress>('progress');

/** Well under Temporal's 51,200-event limit, and the 10,240 the issue sets per run of a chain. */
const HISTORY_BUDGET = 8_000;

/** Exponential backoff (doubling) from `first` to `most` over `attempts` tries; what can never succeed is not retried. */
const retry = (first: Duration, most: Duration, attempts: number): RetryPolicy => ({
  initialInterval: first,
  backoffCoefficient: 2,
  maximumInterval: most,
  maximumAttempts: attempts,
  nonRetryableErrorTypes: NON_RETRYABLE,
});

// Timeouts and retry policies, in one place. Short steps retry quickly; model calls honour the
// endpoint's Retry-After through nextRetryDelay; long steps heartbeat on a ticker, so a dead worker
// is noticed within the heartbeat timeout and a live one never is. Tests shorten the timeout.
function steps(heartbeatTimeout: Duration = '1 minute') {
  /** Data steps: reading, filtering, comparing, the registry and the report. */
  const data: ActivityOptions = { startToCloseTimeout: '2 hours', heartbeatTimeout, retry: retry('1s', '1 minute', 10) };
  /** Model calls over a shard or a pass: an endpoint may be overloaded for a while. */
  const asking: ActivityOptions = { startToCloseTimeout: '12 hours', heartbeatTimeout, retry: retry('2s', '2 minutes', 20) };
  /** Training, on its own queue (a GPU host); a cancelled run waits until the trainer has stopped. */
  const training: ActivityOptions = {
    taskQueue: TRAIN_TASK_QUEUE,
    startToCloseTimeout: '72 hours',
    heartbeatTimeout,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: retry('5s', '5 minutes', 20),
  };
  /** Adapter staging, on the model server's host. */
  const staging: ActivityOptions = { taskQueue: MODEL_TASK_QUEUE, startToCloseTimeout: '30 minutes', heartbeatTimeout, retry: retry('2s', '1 minute', 10) };
  const { prepare, resolveCurrent, filter, compareModels, promote, report } = proxyActivities<Activities>(data);
  const { answerGradeShard, evaluatePass } = proxyActivities<Activities>(asking);
  const { train } = proxyActivities<Activities>(training);
  const { stageAdapter } = proxyActivities<Activities>(staging);
  return { prepare, resolveCurrent, answerGradeShard, filter, train, stageAdapter, evaluatePass, compareModels, promote, report };
}

/** What every phase of a run shares: its input, its state (carried across continue-as-new) and its steps. */
interface Run {
  input: RunInput;
  runId: string;
  act: ReturnType<typeof steps>;
  state: RunState;
  progress: Progress;
  /** A new stage: shown in the web UI (current details) and in `slearn list` (memo), at a few events per run. */
  enter(stage: Stage, details?: Record<string, unknown>): void;
  /** At every stage boundary: continue as new before the history grows large, carrying only references. */
  boundary(): Promise<void>;
}

/**
 * SLearnLLM as a workflow: answer every question with the model in service, grade the answers,
 * drop what the model already knows, fine-tune on the rest, evaluate base, current and tuned on
 * held-out items (and what the model knew, for forgetting), and promote the tuned model only
 * through the gate. Everything in history is a count or a reference; data stays in the store.
 */
export async function selfLearning(input: RunInput, carried?: RunState): Promise<RunResult> {
  const run = startRun(input, carried);
  const prepared = await prepareRun(run);
  const nothingNew = await resolveModelInService(run, prepared);
  if (nothingNew) return nothingNew;
  const models = new ModelHost(run, prepared);
  await answerAllShards(run, prepared, models);
  const filtered = await filterKnown(run, prepared);
  const trained = await trainOnTheRest(run, filtered);
  const evaluation = await evaluateModels(run, prepared, filtered, trained, models);
  const promotion = await promoteThroughGate(run, prepared, filtered, trained, evaluation);
  return reportRun(run, prepared, filtered, trained, evaluation, promotion);
}

function startRun(input: RunInput, carried: RunState | undefined): Run {
  const runId = workflowInfo().workflowId;
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
  state.grades ??= [];
  const run: Run = {
    input,
    runId,
    act: steps(input.heartbeatTimeout as Duration | undefined),
    state,
    progress,
    enter: (stage, details = {}) => {
      progress.stage = stage;
      setCurrentDetails(
        `**${stage}** · ${progress.counts.graded}/${progress.counts.items} graded · known ${progress.counts.known} · unknown ${progress.counts.unknown}`,
      );
      upsertMemo({ stage, known: progress.counts.known, unknown: progress.counts.unknown, ...details });
      log.info('stage', { run: runId, stage, ...details });
    },
    boundary: async () => {
      const info = workflowInfo();
      if (info.continueAsNewSuggested || info.historyLength > HISTORY_BUDGET) await continueRun(run);
    },
  };
  return run;
}

/** Continues as a new run of the chain, carrying the state (references and counts only). */
async function continueRun(run: Run): Promise<never> {
  run.progress.continuedAsNew++;
  log.info('continuing as new', { run: run.runId, historyLength: workflowInfo().historyLength, stage: run.progress.stage });
  return continueAsNew<typeof selfLearning>(run.input, run.state);
}

/** 1. prepare: read today's config and data, validate, store, hold out, shard. */
async function prepareRun(run: Run): Promise<Prepared> {
  const { state, progress } = run;
  state.prepared ??= await run.act.prepare({ ...run.input, runId: run.runId });
  progress.shardsTotal = state.prepared.shards;
  progress.counts.items = state.prepared.trainItems;
  return state.prepared;
}

/** 2. The model in service, and whether anything changed since the last run: when nothing did, the run ends here, reported. */
async function resolveModelInService(run: Run, prepared: Prepared): Promise<RunResult | undefined> {
  const { act, state, progress } = run;
  const ctx = prepared.ctx;
  if (state.current !== undefined) return undefined;
  const resolved = await act.resolveCurrent({ ctx, dataSha: prepared.dataSha });
  state.current = resolved.current;
  if (resolved.current) progress.current = { version: resolved.current.version!, name: resolved.current.name };
  if (!resolved.nothingNew || run.input.baseline) return undefined;
  run.enter('done', { outcome: 'nothing-new' });
  const promotion = await act.promote({ ctx, prepared, current: resolved.current, nothingNew: resolved.nothingNew });
  const written = await act.report({ ctx, counts: progress.counts, current: resolved.current, notices: prepared.notices, reason: resolved.nothingNew });
  return {
    runId: run.runId,
    store: ctx.store,
    status: 'nothing-new',
    counts: progress.counts,
    promotion,
    report: written,
    continuedAsNew: progress.continuedAsNew,
    reason: resolved.nothingNew,
  };
}

/**
 * Runs steps with a model's adapter loaded on the endpoint. A model server that restarted has lost
 * its adapters: the step says so (AdapterNotLoaded) and the adapter is staged again.
 */
class ModelHost {
  private readonly staged = new Map<string, Promise<{ name: string }>>();

  constructor(
    private readonly run: Run,
    private readonly prepared: Prepared,
  ) {}

  /** Once per adapter, however many passes use it; again only when the server lost it. */
  private stage(adapter: NonNullable<ModelUse['adapter']>, again = false): Promise<{ name: string }> {
    if (again || !this.staged.has(adapter.sha256))
      this.staged.set(adapter.sha256, this.run.act.stageAdapter({ store: this.prepared.ctx.store, adapter, endpoint: this.prepared.endpoint }));
    return this.staged.get(adapter.sha256)!;
  }

  async with<R>(m: ModelUse, fn: (m: ModelUse) => Promise<R>): Promise<R> {
    for (let tries = 0; ; tries++) {
      const loaded = m.adapter ? { ...m, name: (await this.stage(m.adapter, tries > 0)).name } : m;
      try {
        return await fn(loaded);
      } catch (e) {
        const lost = e instanceof ActivityFailure && e.cause instanceof ApplicationFailure && e.cause.type === FailureType.AdapterNotLoaded;
        if (!lost || tries >= 3) throw e;
        log.warn('the model server lost the adapter: staging it again', { run: this.run.runId, model: m.label, attempt: tries + 2 });
      }
    }
  }
}

/** 3. answer and grade, shard by shard, a bounded number of shards in flight; continues as new when the history is full. */
async function answerAllShards(run: Run, prepared: Prepared, models: ModelHost): Promise<void> {
  const { act, state, progress } = run;
  const grades = state.grades!;
  run.enter('answer-grade');
  const answering: ModelUse = state.current ?? { label: 'base', name: prepared.endpoint.name };
  const lane = async () => {
    while (state.nextShard < prepared.shards && workflowInfo().historyLength < HISTORY_BUDGET && !workflowInfo().continueAsNewSuggested) {
      const shard = state.nextShard++;
      const r = await models.with(answering, (model) => act.answerGradeShard({ ctx: prepared.ctx, prepared, shard, model }));
      grades[shard] = r.grades;
      addShard(progress, r);
    }
  };
  await Promise.all(Array.from({ length: prepared.shardConcurrency }, lane));
  if (grades.filter(Boolean).length < prepared.shards) await continueRun(run);
  await run.boundary();
}

/** A finished shard's counts and levels, added to the run's. */
function addShard(progress: Progress, r: ShardResult): void {
  for (const k of ['answered', 'graded', 'known', 'unknown', 'ungradeable'] as const) progress.counts[k] += r.counts[k];
  progress.levels ??= { known: 0, maybeKnown: 0, weaklyKnown: 0, unknown: 0 };
  for (const l of Object.keys(r.levels) as (keyof typeof r.levels)[]) progress.levels[l] += r.levels[l];
  progress.shardsDone++;
}

/** 4. filter: the training set is what the model did not know. */
async function filterKnown(run: Run, prepared: Prepared): Promise<FilterResult> {
  const { state, input } = run;
  run.enter('filter');
  state.filter ??= await run.act.filter({ ctx: prepared.ctx, prepared, grades: state.grades!, ...(input.baseline ? { baseline: input.baseline } : {}) });
  await run.boundary();
  return state.filter;
}

/** 5. train on its own task queue (a GPU host in production), from the current adapter when there is one. */
async function trainOnTheRest(run: Run, filtered: FilterResult): Promise<TrainResult> {
  const { state } = run;
  const current = state.current;
  run.enter('train', { trainOn: filtered.kept + filtered.replayed });
  state.train ??= await run.act.train({
    ctx: state.prepared!.ctx,
    trainSet: filtered.trainSet,
    ...(filtered.lateSet ? { lateSet: filtered.lateSet } : {}),
    ...(current?.adapter ? { initAdapter: current.adapter } : {}),
  });
  await run.boundary();
  return state.train;
}

/** 6. evaluate base, current and tuned on held-out items, and the tuned model on what the model knew. */
async function evaluateModels(run: Run, prepared: Prepared, filtered: FilterResult, trained: TrainResult, models: ModelHost): Promise<EvalResult> {
  const { act, state } = run;
  const current = state.current;
  const ctx = prepared.ctx;
  run.enter('evaluate');
  const compared: ModelUse[] = [{ label: 'base', name: prepared.endpoint.name }];
  if (current?.adapter) compared.push(current);
  const tuned: ModelUse | undefined = trained.adapter ? { label: 'tuned', name: '', adapter: trained.adapter } : undefined;
  if (tuned) compared.push(tuned);
  const pass = (set: PassResult['set'], items: Prepared['evalItems'], m: ModelUse) => models.with(m, (model) => act.evaluatePass({ ctx, set, items, model }));
  if (!state.evaluation) {
    const passes: Promise<PassResult>[] = compared.map((m) => pass('eval', prepared.evalItems, m));
    if (tuned && filtered.retention.count) passes.push(pass('retention', filtered.retention, tuned));
    state.evaluation = await act.compareModels({ ctx, evalItems: prepared.evalItems, passes: await Promise.all(passes) });
  }
  await run.boundary();
  return state.evaluation;
}

/** 7. promote through the gate. */
async function promoteThroughGate(
  run: Run,
  prepared: Prepared,
  filtered: FilterResult,
  trained: TrainResult,
  evaluation: EvalResult,
): Promise<PromotionDecision> {
  run.enter('promote', { accuracy: evaluation.tuned?.accuracy ?? evaluation.base.accuracy });
  return run.act.promote({
    ctx: prepared.ctx,
    prepared,
    current: run.state.current ?? null,
    filter: filtered,
    train: trained,
    evaluation,
    ...(run.input.baseline ? { baseline: run.input.baseline } : {}),
  });
}

/** 8. report, and the run's result. */
async function reportRun(
  run: Run,
  prepared: Prepared,
  filtered: FilterResult,
  trained: TrainResult,
  evaluation: EvalResult,
  promotion: PromotionDecision,
): Promise<RunResult> {
  const { progress } = run;
  run.enter('report', { promoted: promotion.promoted });
  const written = await run.act.report({
    ctx: prepared.ctx,
    counts: progress.counts,
    levels: progress.levels,
    current: run.state.current ?? null,
    filter: filtered,
    train: trained,
    evaluation,
    promotion,
    notices: prepared.notices,
  });
  run.enter('done', { accuracy: evaluation.tuned?.accuracy ?? evaluation.base.accuracy, promoted: promotion.promoted });
  return {
    runId: run.runId,
    store: prepared.ctx.store,
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
