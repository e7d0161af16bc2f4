import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { setMaxListeners } from 'node:events';
import { SlearnError } from '../errors';
import { stageAdapter } from '../pipeline/adapters';
import { resolveCurrent } from '../pipeline/current';
import type { StepEnv, StepLog } from '../pipeline/env';
import { compareModels, evaluatePass } from '../pipeline/evaluate';
import { filter } from '../pipeline/filter';
import type { WorkerPolicy } from '../pipeline/policy';
import { prepare } from '../pipeline/prepare';
import { promote } from '../pipeline/promote';
import { report } from '../pipeline/report';
import { answerGradeShard } from '../pipeline/shards';
import { train } from '../pipeline/train';
import { MODEL_TASK_QUEUE, TASK_QUEUE, TRAIN_TASK_QUEUE, type TaskQueue } from '../schemas/run';
import type { Store } from '../store/store';

/** After this many attempts of one step, items whose requests still fail are reported as ungradeable. */
export const GIVE_UP_AT_ATTEMPT = 5;

/** What the worker that hosts the activities provides: its policy, its disks, its trainer. */
export interface WorkerDeps {
  policy: WorkerPolicy;
  env: NodeJS.ProcessEnv;
  openStore(url: string): Promise<Store>;
  scratch: string;
  trainer: string[];
  adapterDir: string;
}

/**
 * A step's failure as Temporal records it: slearn's own failures carry their type, retry meaning and
 * delay (src/errors.ts); anything else is retried under its class name.
 */
export function toFailure(e: unknown): unknown {
  if (e instanceof ApplicationFailure || e instanceof CancelledFailure) return e;
  if (e instanceof SlearnError) {
    const delay = e.retryDelaySeconds;
    return ApplicationFailure.create({
      message: e.message,
      type: e.type,
      nonRetryable: e.nonRetryable,
      ...(delay ? { nextRetryDelay: `${Math.ceil(delay)}s` } : {}),
    });
  }
  const err = e as Error;
  return ApplicationFailure.create({ message: err?.message ?? String(e), type: err?.name ?? 'Error' });
}

/**
 * The attempt's own activity logger with the step's fields on every line. Taken from the context
 * once, not through the module-level `log`, which needs the activity's async context: callbacks such
 * as a cancellation listener run outside it.
 */
function stepLog(logger: Context['log'], fields: Record<string, unknown>): StepLog {
  return {
    info: (message, more) => logger.info(message, { ...fields, ...more }),
    warn: (message, more) => logger.warn(message, { ...fields, ...more }),
  };
}

/**
 * Runs a pipeline step as an activity: heartbeats its latest progress on a ticker derived from the
 * heartbeat timeout (so a live attempt is never declared dead, however slow one request is), passes
 * Temporal's cancellation on (it also fires when the attempt was superseded), maps failures, and
 * says in the worker's log when the step starts, is retried, finds its output already done, ends or fails.
 */
async function asActivity<I, R>(deps: WorkerDeps, step: (env: StepEnv, input: I) => Promise<R>, input: I): Promise<R> {
  const ctx = Context.current();
  const info = ctx.info;
  const signal = ctx.cancellationSignal;
  // Every in-flight model request listens on it; hundreds at once are expected, not a leak.
  setMaxListeners(10_000, signal);
  let latest: unknown = info.heartbeatDetails;
  const timeoutMs = info.heartbeatTimeoutMs;
  const ticker = timeoutMs ? setInterval(() => ctx.heartbeat(latest), Math.max(200, Math.min(5000, timeoutMs / 4))) : undefined;
  const fields = { step: info.activityType, run: info.workflowExecution?.workflowId ?? 'run', attempt: info.attempt };
  const stepLogger = stepLog(ctx.log, fields);
  let reused: string | undefined;
  const env: StepEnv = {
    store: (url) => deps.openStore(url),
    signal,
    attempt: info.attempt,
    giveUp: info.attempt >= GIVE_UP_AT_ATTEMPT,
    progress: (d) => {
      latest = d;
    },
    previous: info.heartbeatDetails,
    policy: deps.policy,
    env: deps.env,
    scratch: deps.scratch,
    trainer: deps.trainer,
    adapterDir: deps.adapterDir,
    // A holder on another host is taken over only after this; renewals happen every fifth of it.
    leaseTtlMs: Math.min(10 * 60_000, Math.max(10_000, 2 * (timeoutMs ?? 60_000))),
    label: `${fields.run}/${fields.step}#${fields.attempt}`,
    log: stepLogger,
    reused: (rec) => {
      reused = rec.reusedFrom ?? rec.runId;
      stepLogger.info('step output already in the store: reused', { reused: true, from: reused, record: rec.step });
    },
  };
  const started = Date.now();
  if (info.attempt > 1) stepLogger.warn('step retried', { reused: false });
  else stepLogger.info('step started', { reused: false });
  try {
    if (timeoutMs) ctx.heartbeat(latest);
    const result = await step(env, input);
    stepLogger.info('step finished', { reused: reused !== undefined, ms: Date.now() - started });
    return result;
  } catch (e) {
    if (signal.aborted) {
      stepLogger.info('step cancelled', { reason: String(signal.reason ?? 'cancelled'), ms: Date.now() - started });
      throw new CancelledFailure(String(signal.reason ?? 'cancelled'));
    }
    const failure = toFailure(e);
    const f = failure as Partial<ApplicationFailure>;
    stepLogger.warn('step failed', { type: f.type, retryable: !f.nonRetryable, error: (e as Error)?.message ?? String(e), ms: Date.now() - started });
    throw failure;
  } finally {
    if (ticker) clearInterval(ticker);
  }
}

/** All activities, built from what the worker injects (Temporal's activities-dependency-injection pattern). */
export function createActivities(deps: WorkerDeps) {
  const a =
    <I, R>(step: (env: StepEnv, input: I) => Promise<R>) =>
    (input: I) =>
      asActivity(deps, step, input);
  return {
    prepare: a(prepare),
    resolveCurrent: a(resolveCurrent),
    answerGradeShard: a(answerGradeShard),
    filter: a(filter),
    train: a(train),
    stageAdapter: a(stageAdapter),
    evaluatePass: a(evaluatePass),
    compareModels: a(compareModels),
    promote: a(promote),
    report: a(report),
  };
}

export type Activities = ReturnType<typeof createActivities>;

/**
 * Which worker serves what, as the workflow routes it: training on its own queue (a GPU host),
 * adapter staging beside the model server (it writes where the server reads), the rest on the main
 * queue with the workflow.
 */
export const QUEUE_ACTIVITIES = {
  [TASK_QUEUE]: ['prepare', 'resolveCurrent', 'answerGradeShard', 'filter', 'evaluatePass', 'compareModels', 'promote', 'report'],
  [TRAIN_TASK_QUEUE]: ['train'],
  [MODEL_TASK_QUEUE]: ['stageAdapter'],
} as const satisfies Record<TaskQueue, readonly (keyof Activities)[]>;

/** The activities a worker on `queue` registers. */
export function activitiesFor(queue: TaskQueue, all: Activities): Partial<Activities> {
  return Object.fromEntries(QUEUE_ACTIVITIES[queue].map((name) => [name, all[name]]));
}
