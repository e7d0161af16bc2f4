import { copyFile, link, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Config } from '../schemas/config';
import type { TrainProgressDetails } from '../schemas/progress';
import type { StepCtx, TrainResult } from '../schemas/run';
import { trainArgv, type TrainArgs, type TrainerEvent } from '../schemas/trainer';
import { processId, stopGroup } from '../proc';
import { LeaseLost, TrainerBusy, TrainerError } from '../errors';
import { Lease } from '../store/lease';
import { getDir, putDir } from '../store/manifest';
import { fingerprint, once, runKey, runPrefix } from '../store/steps';
import type { Store } from '../store/store';
import type { StepEnv } from './env';
import { runConfig as loadConfig } from './step';
import { startTrainer, trainerEnv } from './trainer-process';

export interface TrainInput {
  ctx: StepCtx;
  trainSet: ArtifactRef;
  /** Examples the trainer mixes into the second half of training only (KnownPatch). */
  lateSet?: ArtifactRef;
  /** A chained run continues the current model's adapter. */
  initAdapter?: ArtifactRef;
}

interface CheckpointDoc {
  step: number;
  manifest: ArtifactRef;
  losses: ArtifactRef;
  host: string;
  at: string;
}

type LossPoint = { step: number; loss: number; epoch?: number };

export function trainerArgs(config: Config, paths: { data: string; out: string; initAdapter?: string; lateData?: string }): TrainArgs {
  const t = config.train;
  return {
    base: t.base ?? config.model.name,
    data: paths.data,
    out: paths.out,
    epochs: t.epochs,
    learningRate: t.learningRate,
    warmupRatio: t.warmupRatio,
    loraR: t.loraR,
    loraAlpha: t.loraAlpha,
    loraDropout: t.loraDropout,
    loraTargets: t.loraTargets,
    saveSteps: t.saveSteps,
    seed: t.seed,
    device: t.device,
    precision: t.precision,
    batchSize: t.batchSize,
    gradientAccumulation: t.gradientAccumulation,
    maxSeqLen: t.maxSeqLen,
    maxSteps: t.maxSteps,
    reportTo: t.reportTo,
    quantization: t.quantization,
    packing: t.packing,
    ...(paths.initAdapter ? { initAdapter: paths.initAdapter } : {}),
    ...(paths.lateData ? { lateData: paths.lateData } : {}),
  };
}

const pad = (n: number) => String(n).padStart(10, '0');

/** Copies a checkpoint as it is when reported (hard links: instant, and safe from the trainer's rotation). */
async function snapshot(src: string, dest: string): Promise<void> {
  await rm(dest, { recursive: true, force: true });
  await mkdir(dest, { recursive: true });
  for (const name of await readdir(src)) {
    const from = join(src, name);
    if (!(await stat(from)).isFile()) continue;
    await link(from, join(dest, name)).catch(() => copyFile(from, join(dest, name)));
  }
}

/**
 * Fine-tunes through the trainer contract on this host's scratch disk, with the store as the only
 * thing shared with other hosts: the training set (and a chained run's adapter) are staged from
 * it, each checkpoint is uploaded to it when the trainer reports it, and a retry on any host
 * restores the newest uploaded checkpoint before the trainer resumes. A lease in the store keeps
 * one trainer per run across hosts; a trainer whose lease cannot be renewed is stopped.
 */
export async function train(env: StepEnv, { ctx, trainSet, lateSet, initAdapter }: TrainInput): Promise<TrainResult> {
  const store = await env.store(ctx.store);
  const config = await loadConfig(store, ctx);
  const base = config.train.base ?? config.model.name;
  if (!trainSet.count) return { skipped: true, base, steps: 0, resumedFromStep: 0, trainSeconds: 0 };
  // A run without a late set keeps the fingerprint it had before late sets existed.
  const fp = lateSet
    ? fingerprint('train', trainSet.sha256, base, config.train, initAdapter?.sha256 ?? null, lateSet.sha256)
    : fingerprint('train', trainSet.sha256, base, config.train, initAdapter?.sha256 ?? null);
  return once(store, ctx, 'train', fp, { trainSet, ...(lateSet ? { lateSet } : {}), ...(initAdapter ? { initAdapter } : {}) }, () =>
    trainOnce(env, store, ctx, config, fp, { trainSet, lateSet, initAdapter }),
  );
}

async function trainOnce(
  env: StepEnv,
  store: Store,
  ctx: StepCtx,
  config: Config,
  fp: string,
  { trainSet, lateSet, initAdapter }: Pick<TrainInput, 'trainSet' | 'lateSet' | 'initAdapter'>,
) {
  const prefix = `${runPrefix(ctx.runId)}/train-${fp.slice(0, 16)}`;
  const lease = await Lease.acquire(store, `leases/${runKey(ctx.runId)}/train-${fp.slice(0, 16)}`, {
    token: Lease.newToken(env.label),
    what: `training of run ${ctx.runId}`,
    ttlMs: env.leaseTtlMs,
    stopOrphan: (child) => stopGroup(child, 10_000),
  });
  if (!(lease instanceof Lease)) throw new TrainerBusy(lease.busy, lease.retryAfterMs);

  const out = join(env.scratch, 'train', `${runKey(ctx.runId)}-${fp.slice(0, 16)}`);
  let trainerPid: number | undefined;
  let renewing: NodeJS.Timeout | undefined;
  try {
    await mkdir(out, { recursive: true });
    const data = join(out, 'train.jsonl');
    await store.download(trainSet, data);
    let lateData: string | undefined;
    if (lateSet) {
      lateData = join(out, 'late.jsonl');
      await store.download(lateSet, lateData);
    }
    let initDir: string | undefined;
    if (initAdapter) {
      initDir = join(out, 'init-adapter');
      await getDir(store, initAdapter, initDir);
    }

    // Resume from the newest checkpoint any host uploaded (this host's copy is used when it is the same).
    const docs = await store.listDocs(`${prefix}/checkpoints`);
    const newest = docs.length ? await store.readDoc<CheckpointDoc>(docs[docs.length - 1]) : undefined;
    let losses: LossPoint[] = [];
    if (newest) {
      await getDir(store, newest.manifest, join(out, `checkpoint-${newest.step}`));
      losses = await store.jsonlAll<LossPoint>(newest.losses);
    }

    const details: TrainProgressDetails = { phase: 'train', step: newest?.step ?? 0, totalSteps: 0, host: hostname(), startedAt: Date.now() };
    env.progress({ ...details });
    let done: Extract<TrainerEvent, { event: 'done' }> | undefined;
    let error: Extract<TrainerEvent, { event: 'error' }> | undefined;
    let firstStep: { step: number; t: number } | undefined;
    let uploads: Promise<void> = Promise.resolve();
    let uploadError: Error | undefined;

    const upload = (step: number, src: string) => {
      const staged = join(out, '.uploads', `checkpoint-${step}`);
      const lossesNow = losses.filter((l) => l.step <= step);
      const ready = snapshot(src, staged);
      uploads = uploads.then(async () => {
        try {
          await ready;
          const manifest = await putDir(store, staged, 'checkpoint', { step });
          const lossRef = await store.putJsonl(lossesNow);
          // Only the lease holder publishes checkpoints: a superseded attempt never overwrites a newer one's.
          await lease.assertHeld();
          await store.writeDoc(`${prefix}/checkpoints/${pad(step)}.json`, {
            step,
            manifest,
            losses: lossRef,
            host: hostname(),
            at: new Date().toISOString(),
          } satisfies CheckpointDoc);
          details.uploadedStep = step;
          env.progress({ ...details });
        } catch (e) {
          uploadError ??= e as Error;
        } finally {
          await rm(staged, { recursive: true, force: true });
        }
      });
    };

    const run = startTrainer(
      env.trainer,
      trainArgv({ ...trainerArgs(config, { data, out, initAdapter: initDir, lateData }) }),
      (e) => {
        switch (e.event) {
          case 'start':
            details.totalSteps = e.total_steps;
            details.resumedFromStep = e.resumed_from_step;
            details.step = e.resumed_from_step;
            if (e.device) details.device = e.device;
            if (e.precision) details.precision = e.precision;
            break;
          case 'progress':
            firstStep ??= { step: e.step, t: Date.now() };
            if (e.step > firstStep.step) details.stepsPerSecond = (e.step - firstStep.step) / ((Date.now() - firstStep.t) / 1000);
            details.step = e.step;
            details.totalSteps = e.total_steps;
            if (typeof e.loss === 'number') {
              details.loss = e.loss;
              // Steps arrive in order; a trainer resumed from a checkpoint repeats the steps after it.
              // (Copying the whole curve per step was quadratic: 2.4 GB and 150 s at 125,000 steps.)
              while (losses.length && losses[losses.length - 1].step >= e.step) losses.pop();
              losses.push({ step: e.step, loss: e.loss, ...(e.epoch !== undefined ? { epoch: e.epoch } : {}) });
            }
            break;
          case 'checkpoint':
            details.checkpointStep = e.step;
            upload(e.step, isAbsolute(e.path) ? e.path : resolve(out, e.path));
            break;
          case 'done':
            done = e;
            break;
          case 'error':
            error = e;
        }
        env.progress({ ...details });
      },
      { logFile: join(out, 'trainer.log'), env: trainerEnv(env.env) },
    );
    trainerPid = run.child.pid;
    const trainer = trainerPid ? processId(trainerPid) : undefined;
    const stop = async () => {
      if (trainer) await stopGroup(trainer, 5000);
    };

    // Renew the lease well inside its lifetime; a trainer whose lease cannot be renewed is stopped
    // before the lease expires, so a takeover on another host never overlaps it.
    let lastRenewed = Date.now();
    let lost: Error | undefined;
    const renew = async () => {
      try {
        await lease.renew(trainer);
        lastRenewed = Date.now();
      } catch (e) {
        if (e instanceof LeaseLost || Date.now() - lastRenewed > env.leaseTtlMs * 0.6) {
          lost ??= e instanceof LeaseLost ? e : new LeaseLost(`cannot renew the training lease: ${(e as Error).message}`);
          await stop();
        }
      }
    };
    await renew();
    renewing = setInterval(() => void renew(), Math.max(200, env.leaseTtlMs / 5));
    const onAbort = () => void stop();
    env.signal.addEventListener('abort', onAbort, { once: true });
    let exit;
    try {
      exit = await run.done;
    } finally {
      env.signal.removeEventListener('abort', onAbort);
      clearInterval(renewing);
      renewing = undefined;
    }
    await uploads;
    env.signal.throwIfAborted();
    if (lost) throw lost;
    if (exit.code !== 0 || !done) {
      const why = error?.message ?? `trainer exited with ${exit.signal ?? `code ${exit.code}`}: ${exit.stderrTail.slice(-8).join('\n')}`;
      if (error && error.retryable === false) throw new TrainerError(why);
      throw new Error(why);
    }
    if (uploadError) throw uploadError;
    const adapterDir = isAbsolute(done.adapter) ? done.adapter : resolve(out, done.adapter);
    await lease.assertHeld();
    const adapter = await putDir(store, adapterDir, 'adapter', { base: config.train.base ?? config.model.name, steps: done.steps });
    const lossesRef = await store.putJsonl(losses.sort((a, b) => a.step - b.step));
    const result: TrainResult = {
      skipped: false,
      base: config.train.base ?? config.model.name,
      adapter,
      ...(initAdapter ? { initAdapter } : {}),
      steps: done.steps,
      resumedFromStep: details.resumedFromStep ?? 0,
      trainSeconds: done.train_seconds,
      losses: lossesRef,
      runtime: {
        host: hostname(),
        ...(details.device ? { device: details.device } : {}),
        ...(details.precision ? { precision: details.precision } : {}),
        ...(done.tokens_per_second !== undefined ? { tokensPerSecond: done.tokens_per_second } : {}),
        ...(done.peak_memory_bytes !== undefined ? { peakMemoryBytes: done.peak_memory_bytes } : {}),
      },
    };
    return { outputs: { adapter, losses: lossesRef }, result };
  } finally {
    if (renewing) clearInterval(renewing);
    await lease.release().catch(() => undefined);
  }
}
