import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { ArtifactStore } from '../artifacts/store';
import { ModelCallError } from '../model/client';
import type { ArtifactRef, StepRecord } from '../schemas/artifacts';
import { ConfigSchema, type Config } from '../schemas/config';
import type { StepCtx } from '../schemas/run';

export type { StepCtx } from '../schemas/run';

export function openStep(ctx: StepCtx): { store: ArtifactStore; config: Config } {
  const store = new ArtifactStore(ctx.root);
  return { store, config: ConfigSchema.parse(store.readJson(ctx.config)) };
}

export function fingerprint(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/**
 * Idempotency in one place: a step whose record exists for the same input returns it untouched;
 * otherwise it runs and its record is written last, so a crash before that simply runs it again.
 */
export async function onceper<R>(
  store: ArtifactStore,
  ctx: StepCtx,
  step: string,
  fp: string,
  inputs: Record<string, ArtifactRef>,
  run: () => Promise<{ outputs: Record<string, ArtifactRef>; result: R }>,
): Promise<R> {
  const done = store.findStep(ctx.runId, step, fp, ctx.reuseFrom);
  if (done) return done.result as R;
  const { outputs, result } = await run();
  const rec: StepRecord = { runId: ctx.runId, step, fingerprint: fp, inputs, outputs, result, finishedAt: new Date().toISOString() };
  store.putStep(rec);
  return result;
}

export function inActivity(): boolean {
  try {
    Context.current();
    return true;
  } catch {
    return false;
  }
}

export function heartbeat(details: unknown): void {
  if (inActivity()) Context.current().heartbeat(details);
}

export function previousHeartbeat<T>(): T | undefined {
  return inActivity() ? (Context.current().info.heartbeatDetails as T | undefined) : undefined;
}

export function attempt(): number {
  return inActivity() ? Context.current().info.attempt : 1;
}

export function cancellationSignal(): AbortSignal | undefined {
  if (!inActivity()) return undefined;
  const signal = Context.current().cancellationSignal;
  // Every in-flight model request listens on it; hundreds at once are expected, not a leak.
  setMaxListeners(10_000, signal);
  return signal;
}

/** Turns a model error into the failure Temporal should see: retry later, or stop with what to fix. */
export function toFailure(err: ModelCallError): ApplicationFailure {
  if (err.kind === 'fatal') return ApplicationFailure.nonRetryable(err.message, 'ModelConfigError');
  return ApplicationFailure.create({
    message: err.message,
    type: 'ModelUnavailable',
    nextRetryDelay: err.retryAfterSeconds ? `${Math.ceil(err.retryAfterSeconds)}s` : undefined,
  });
}
