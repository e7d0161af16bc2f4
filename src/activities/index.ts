import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { setMaxListeners } from 'node:events';
import { SlearnError } from '../errors';
import type { StepEnv } from '../pipeline/env';
import { prepare } from '../pipeline/prepare';
import type { WorkerPolicy } from '../pipeline/policy';
import { answerGradeShard } from '../pipeline/shards';
import { filter } from '../pipeline/filter';
import { train } from '../pipeline/train';
import { stageAdapter } from '../pipeline/adapters';
import { compareModels, evaluatePass } from '../pipeline/evaluate';
import { promote, resolveCurrent } from '../pipeline/promote';
import { report } from '../pipeline/report';
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
 * Runs a pipeline step as an activity: heartbeats its latest progress on a ticker derived from the
 * heartbeat timeout (so a live attempt is never declared dead, however slow one request is), passes
 * Temporal's cancellation on (it also fires when the attempt was superseded), and maps failures.
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
    label: `${info.workflowExecution?.workflowId ?? 'run'}/${info.activityType}#${info.attempt}`,
  };
  try {
    if (timeoutMs) ctx.heartbeat(latest);
    return await step(env, input);
  } catch (e) {
    if (signal.aborted) throw new CancelledFailure(String(signal.reason ?? 'cancelled'));
    throw toFailure(e);
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
