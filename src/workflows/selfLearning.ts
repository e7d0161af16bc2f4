import {
  ActivityCancellationType,
  continueAsNew,
  defineQuery,
  defineSignal,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type { Activities } from '../activities';
import type { Progress, RunInput, RunResult, RunState, ShardResult, TrainProgress } from '../schemas/run';
import { TRAIN_TASK_QUEUE } from '../schemas/run';

export const progressQuery = defineQuery<Progress>('progress');
export const trainProgressSignal = defineSignal<[TrainProgress]>('trainProgress');

// Timeouts and retry policies, in one place. Short steps retry quickly; model calls honour the
// endpoint's Retry-After through nextRetryDelay; long steps heartbeat so a dead worker is noticed in
// a minute rather than after the start-to-close timeout. Tests shorten the heartbeat timeout.
function steps(heartbeatTimeout: Duration = '1 minute') {
  const { prepare, filter, report } = proxyActivities<Activities>({
    startToCloseTimeout: '30 minutes',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10, nonRetryableErrorTypes: ['InvalidInput'] },
  });
  const { answerShard, gradeShard, evaluate } = proxyActivities<Activities>({
    startToCloseTimeout: '4 hours',
    heartbeatTimeout,
    retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 20, nonRetryableErrorTypes: ['ModelConfigError'] },
  });
  const { train } = proxyActivities<Activities>({
    taskQueue: TRAIN_TASK_QUEUE,
    startToCloseTimeout: '48 hours',
    heartbeatTimeout,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10, nonRetryableErrorTypes: ['TrainerError'] },
  });
  return { prepare, answerShard, gradeShard, filter, train, evaluate, report };
}

/** Continue-as-new keeps a million-item run's history far below Temporal's limits. */
function historyIsLarge(): boolean {
  const info = workflowInfo();
  return info.continueAsNewSuggested || info.historyLength > 20_000;
}

/**
 * SLearnLLM as a workflow: answer every question, grade the answers, drop what the model already
 * knows, fine-tune on the rest, and evaluate base against tuned. Everything in history is a count or
 * an artifact reference; the data stays in the artifact store.
 */
export async function selfLearning(input: RunInput, carried?: RunState): Promise<RunResult> {
  const runId = workflowInfo().workflowId;
  const { prepare, answerShard, gradeShard, filter, train, evaluate, report } = steps(input.heartbeatTimeout as Duration | undefined);
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
  setHandler(trainProgressSignal, (p) => {
    progress.train = p;
  });

  // 1. prepare: validate, normalise, store, shard.
  const prepared = state.prepared ?? (await prepare({ ...input, runId }));
  state.prepared = prepared;
  const ctx = prepared.ctx;
  progress.shardsTotal = prepared.shards;
  progress.counts.items = prepared.items.count ?? 0;

  // 2–3. answer and grade, shard by shard, a bounded number of shards in flight.
  progress.stage = 'answer-grade';
  const add = (r: ShardResult) => {
    for (const k of ['answered', 'graded', 'known', 'unknown', 'ungradeable'] as const) progress.counts[k] += r.counts[k];
  };
  const lane = async () => {
    while (state.nextShard < prepared.shards && !historyIsLarge()) {
      const shard = state.nextShard++;
      const answered = await answerShard({ ctx, shard });
      const graded = await gradeShard({ ctx, shard, answers: answered.answers });
      add(graded);
      progress.shardsDone++;
    }
  };
  await Promise.all(Array.from({ length: input.config.shardConcurrency }, lane));
  if (state.nextShard < prepared.shards) {
    progress.continuedAsNew++;
    await continueAsNew<typeof selfLearning>(input, state);
  }

  // 4. filter: the training set is what the model did not know.
  progress.stage = 'filter';
  const filtered = await filter({ ctx, shards: prepared.shards });

  // 5. train on its own task queue (a GPU host in production).
  progress.stage = 'train';
  const trained = await train({ ctx, trainSet: filtered.trainSet });

  // 6. evaluate base vs tuned and write the report.
  progress.stage = 'evaluate';
  const evaluation = await evaluate({ ctx, evalItems: prepared.evalItems, train: trained });
  const written = await report({ ctx, counts: progress.counts, filter: filtered, train: trained, evaluation });

  progress.stage = 'done';
  return { runId, counts: progress.counts, filter: filtered, train: trained, evaluation, report: written, continuedAsNew: progress.continuedAsNew };
}
