import { copyFile, link, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Config } from '../schemas/config';
import type { TrainProgressDetails } from '../schemas/progress';
import type { StepCtx, TrainResult } from '../schemas/run';
import { launchArgv, trainArgv, type TrainArgs, type TrainerEvent, type TrainRuntime } from '../schemas/trainer';
import { trainerCommand } from '../paths';
import { processId, stopGroup, type ProcessId } from '../proc';
import { LeaseLost, TrainerBusy, TrainerError } from '../errors';
import { Lease } from '../store/lease';
import { getDir, putDir } from '../store/manifest';
import { fingerprint, once, runKey, runPrefix } from '../store/steps';
import type { Store } from '../store/store';
import type { StepEnv, StepLog } from './env';
import { runConfig as loadConfig } from './step';
import { resolveProcesses, startTrainer, trainerEnv, type TrainerExit, type TrainerRun } from './trainer-process';

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

/** Keys of `train` that say how a training runs, not what it learns: a retry that changes them still resumes. */
const HOW_IT_RUNS = ['saveSteps', 'saveMinutes', 'logSeconds', 'processes', 'distributed', 'gradientCheckpointing', 'attention', 'reportTo', 'chatTemplate'];

/** What decides what a training learns: the `train` settings less how it runs (the template counts by its contents). */
export function learnedSettings(t: Config['train']): Record<string, unknown> {
  return Object.fromEntries(Object.entries(t).filter(([k]) => !HOW_IT_RUNS.includes(k)));
}

export function trainerArgs(config: Config, paths: { data: string; out: string; initAdapter?: string; lateData?: string; chatTemplate?: string }): TrainArgs {
  const t = config.train;
  const optional = <K extends keyof TrainArgs>(key: K, value: TrainArgs[K] | undefined) => (value === undefined ? {} : { [key]: value });
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
    distributed: t.distributed,
    gradientCheckpointing: t.gradientCheckpointing,
    attention: t.attention,
    ...optional('saveSteps', t.saveSteps),
    ...optional('saveMinutes', t.saveMinutes),
    ...optional('logSeconds', t.logSeconds),
    ...optional('initAdapter', paths.initAdapter),
    ...optional('lateData', paths.lateData),
    ...optional('chatTemplate', paths.chatTemplate),
  };
}

const pad = (n: number) => String(n).padStart(10, '0');
const quiet: StepLog = { info: () => undefined, warn: () => undefined };

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
 * one trainer per run across hosts; a trainer whose lease cannot be renewed is stopped. With
 * several GPUs the trainer runs under torchrun, one process per GPU, as one process group.
 */
export async function train(env: StepEnv, { ctx, trainSet, lateSet, initAdapter }: TrainInput): Promise<TrainResult> {
  const store = await env.store(ctx.store);
  const config = await loadConfig(store, ctx);
  const base = config.train.base ?? config.model.name;
  if (!trainSet.count) return { skipped: true, base, steps: 0, resumedFromStep: 0, trainSeconds: 0 };
  const learned = learnedSettings(config.train);
  const template = ctx.chatTemplate?.sha256 ?? null;
  // A run without a late set (or a chat template) keeps the fingerprint it would have had without the key.
  const fp = fingerprint(
    'train',
    trainSet.sha256,
    base,
    learned,
    initAdapter?.sha256 ?? null,
    ...(lateSet || template ? [lateSet?.sha256 ?? null] : []),
    ...(template ? [template] : []),
  );
  return once(store, ctx, 'train', fp, { trainSet, ...(lateSet ? { lateSet } : {}), ...(initAdapter ? { initAdapter } : {}) }, () =>
    trainOnce(env, store, ctx, config, fp, { trainSet, lateSet, initAdapter }),
  );
}

/** The files the trainer reads, staged from the store into this host's scratch directory. */
async function stageInputs(store: Store, out: string, ctx: StepCtx, { trainSet, lateSet, initAdapter }: Omit<TrainInput, 'ctx'>) {
  await mkdir(out, { recursive: true });
  const data = join(out, 'train.jsonl');
  await store.download(trainSet, data);
  const stage = async (ref: ArtifactRef | undefined, name: string) => {
    if (!ref) return undefined;
    await store.download(ref, join(out, name));
    return join(out, name);
  };
  const lateData = await stage(lateSet, 'late.jsonl');
  const chatTemplate = await stage(ctx.chatTemplate, 'chat_template.jinja');
  let initDir: string | undefined;
  if (initAdapter) {
    initDir = join(out, 'init-adapter');
    await getDir(store, initAdapter, initDir);
  }
  return { data, lateData, chatTemplate, initAdapter: initDir };
}

/** The newest checkpoint any host uploaded, restored into `out` (this host's copy is used when it is the same), and the loss curve up to it. */
async function restoreNewestCheckpoint(store: Store, prefix: string, out: string): Promise<{ step: number; losses: LossPoint[] }> {
  const docs = await store.listDocs(`${prefix}/checkpoints`);
  const newest = docs.length ? await store.readDoc<CheckpointDoc>(docs[docs.length - 1]) : undefined;
  if (!newest) return { step: 0, losses: [] };
  await getDir(store, newest.manifest, join(out, `checkpoint-${newest.step}`));
  return { step: newest.step, losses: await store.jsonlAll<LossPoint>(newest.losses) };
}

/**
 * The live state of a training from the trainer's events: the heartbeat details (step, loss, speed,
 * where it runs), the loss curve, and how it ended. A trainer that prints several error events (under
 * torchrun, the rank that failed and the ranks stopped after it) is judged by its first non-retryable one.
 */
class TrainingProgress {
  readonly details: TrainProgressDetails;
  done?: Extract<TrainerEvent, { event: 'done' }>;
  error?: Extract<TrainerEvent, { event: 'error' }>;
  start?: Extract<TrainerEvent, { event: 'start' }>;
  private firstStep?: { step: number; t: number };

  constructor(
    private readonly env: StepEnv,
    resumed: { step: number; losses: LossPoint[] },
    readonly losses: LossPoint[] = resumed.losses,
  ) {
    this.details = { phase: 'train', step: resumed.step, totalSteps: 0, host: hostname(), startedAt: Date.now() };
    env.progress({ ...this.details });
  }

  onEvent(e: TrainerEvent): void {
    const d = this.details;
    switch (e.event) {
      case 'start':
        this.start = e;
        d.totalSteps = e.total_steps;
        d.resumedFromStep = e.resumed_from_step;
        d.step = e.resumed_from_step;
        if (e.device) d.device = e.device;
        if (e.precision) d.precision = e.precision;
        if (e.processes) d.processes = e.processes;
        break;
      case 'progress':
        this.firstStep ??= { step: e.step, t: Date.now() };
        if (e.step > this.firstStep.step) d.stepsPerSecond = (e.step - this.firstStep.step) / ((Date.now() - this.firstStep.t) / 1000);
        d.step = e.step;
        d.totalSteps = e.total_steps;
        if (typeof e.loss === 'number') {
          d.loss = e.loss;
          // Steps arrive in order; a trainer resumed from a checkpoint repeats the steps after it.
          // (Copying the whole curve per step was quadratic: 2.4 GB and 150 s at 125,000 steps.)
          while (this.losses.length && this.losses[this.losses.length - 1].step >= e.step) this.losses.pop();
          this.losses.push({ step: e.step, loss: e.loss, ...(e.epoch !== undefined ? { epoch: e.epoch } : {}) });
        }
        break;
      case 'checkpoint':
        d.checkpointStep = e.step;
        break;
      case 'done':
        this.done = e;
        break;
      case 'error':
        if (!this.error || (this.error.retryable !== false && e.retryable === false)) this.error = e;
    }
    this.env.progress({ ...d });
  }

  uploaded(step: number): void {
    this.details.uploadedStep = step;
    this.env.progress({ ...this.details });
  }

  /** Where and how it ran, for the result, the report and the registry. */
  runtime(): TrainRuntime {
    const s = this.start;
    const d = this.done;
    const all: TrainRuntime = {
      host: hostname(),
      device: s?.device,
      precision: s?.precision,
      gpus: s?.gpus?.length ? s.gpus : undefined,
      processes: s?.processes,
      perDeviceBatch: s?.per_device_batch,
      gradientAccumulation: s?.gradient_accumulation,
      effectiveBatch: s?.effective_batch,
      distributed: s?.distributed,
      gradientCheckpointing: s?.gradient_checkpointing,
      attention: s?.attention,
      tokensPerSecond: d?.tokens_per_second,
      peakMemoryBytes: d?.peak_memory_bytes,
    };
    return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
  }
}

/**
 * Uploads the checkpoints the trainer reports, off the training path: the trainer never waits for
 * the store. A reported checkpoint is snapshotted at once (hard links: safe from the trainer's
 * rotation), then uploaded in order, one at a time, each with the loss curve up to it. A snapshot
 * still waiting when a newer one arrives is dropped (a retry resumes from the newest only), so a
 * store slower than the checkpoint interval never piles up snapshots. Only the lease holder
 * publishes: a superseded attempt never overwrites a newer one's checkpoint.
 */
export class CheckpointUploader {
  private queue: Promise<void> = Promise.resolve();
  private waiting?: { step: number; staged: string; ready: Promise<void>; losses: LossPoint[] };
  readonly uploaded: number[] = [];
  error?: Error;

  constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly lease: Lease,
    private readonly out: string,
    private readonly onUploaded: (step: number) => void,
    private readonly log: StepLog,
  ) {}

  /** A checkpoint the trainer reported, with the loss curve so far. */
  add(step: number, path: string, losses: LossPoint[]): void {
    const staged = join(this.out, '.uploads', `checkpoint-${step}`);
    const superseded = this.waiting;
    this.waiting = { step, staged, ready: snapshot(path, staged), losses: losses.filter((l) => l.step <= step) };
    if (superseded) void this.drop(superseded, `checkpoint ${step} supersedes it`);
    this.queue = this.queue.then(() => this.next());
  }

  /** Waits for the upload under way; one still waiting is dropped when the training is done (its adapter supersedes it). */
  async settle(trainingDone: boolean): Promise<void> {
    if (trainingDone && this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      await this.drop(w, 'the training is done');
    }
    await this.queue;
  }

  private async drop(w: NonNullable<CheckpointUploader['waiting']>, why: string): Promise<void> {
    this.log.info('checkpoint not uploaded', { step: w.step, why });
    await w.ready.catch(() => undefined);
    await rm(w.staged, { recursive: true, force: true });
  }

  private async next(): Promise<void> {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    const t0 = Date.now();
    try {
      await w.ready;
      const manifest = await putDir(this.store, w.staged, 'checkpoint', { step: w.step });
      const losses = await this.store.putJsonl(w.losses);
      await this.lease.assertHeld();
      await this.store.writeDoc(`${this.prefix}/checkpoints/${pad(w.step)}.json`, {
        step: w.step,
        manifest,
        losses,
        host: hostname(),
        at: new Date().toISOString(),
      } satisfies CheckpointDoc);
      this.uploaded.push(w.step);
      this.onUploaded(w.step);
      this.log.info('checkpoint uploaded', { step: w.step, bytes: manifest.bytes, seconds: (Date.now() - t0) / 1000 });
    } catch (e) {
      this.error ??= e as Error;
      this.log.warn('checkpoint upload failed', { step: w.step, error: (e as Error).message });
    } finally {
      await rm(w.staged, { recursive: true, force: true });
    }
  }
}

/**
 * Renews the lease while the trainer runs, well inside its lifetime, recording the trainer's process
 * (under torchrun the launcher: its ranks die with it). A trainer whose lease cannot be renewed is
 * stopped before the lease expires, so a takeover on another host never overlaps it; a cancelled
 * step stops it too. Resolves when the trainer exited, with the lease loss if there was one.
 */
export async function keepLeaseAlive(
  lease: Lease,
  run: TrainerRun,
  { ttlMs, signal, log }: { ttlMs: number; signal: AbortSignal; log: StepLog },
): Promise<{ exit: TrainerExit; lost?: Error }> {
  const trainer: ProcessId | undefined = run.child.pid ? processId(run.child.pid) : undefined;
  const stop = async () => {
    if (trainer) await stopGroup(trainer, 5000);
  };
  let lastRenewed = Date.now();
  let lost: Error | undefined;
  const renew = async () => {
    try {
      await lease.renew(trainer);
      lastRenewed = Date.now();
    } catch (e) {
      if (e instanceof LeaseLost || Date.now() - lastRenewed > ttlMs * 0.6) {
        lost ??= e instanceof LeaseLost ? e : new LeaseLost(`cannot renew the training lease: ${(e as Error).message}`);
        log.warn('training lease lost: stopping the trainer', { error: lost.message });
        await stop();
      }
    }
  };
  await renew();
  const renewing = setInterval(() => void renew(), Math.max(200, ttlMs / 5));
  const onAbort = () => {
    log.info('training cancelled: stopping the trainer');
    void stop();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return { exit: await run.done, lost };
  } finally {
    signal.removeEventListener('abort', onAbort);
    clearInterval(renewing);
  }
}

/** How a trainer run that did not finish fails: non-retryable when the trainer said so, else retried. */
function failure(progress: TrainingProgress, exit: TrainerExit): Error {
  const why = progress.error?.message ?? `trainer exited with ${exit.signal ?? `code ${exit.code}`}: ${exit.stderrTail.slice(-8).join('\n')}`;
  return progress.error?.retryable === false ? new TrainerError(why) : new Error(why);
}

async function trainOnce(
  env: StepEnv,
  store: Store,
  ctx: StepCtx,
  config: Config,
  fp: string,
  input: Pick<TrainInput, 'trainSet' | 'lateSet' | 'initAdapter'>,
): Promise<{ outputs: Record<string, ArtifactRef>; result: TrainResult }> {
  const log = env.log ?? quiet;
  const base = config.train.base ?? config.model.name;
  const prefix = `${runPrefix(ctx.runId)}/train-${fp.slice(0, 16)}`;
  const lease = await Lease.acquire(store, `leases/${runKey(ctx.runId)}/train-${fp.slice(0, 16)}`, {
    token: Lease.newToken(env.label),
    what: `training of run ${ctx.runId}`,
    ttlMs: env.leaseTtlMs,
    stopOrphan: (child) => stopGroup(child, 10_000),
  });
  if (!(lease instanceof Lease)) throw new TrainerBusy(lease.busy, lease.retryAfterMs);

  const out = join(env.scratch, 'train', `${runKey(ctx.runId)}-${fp.slice(0, 16)}`);
  try {
    const files = await stageInputs(store, out, ctx, input);
    const restored = await restoreNewestCheckpoint(store, prefix, out);
    const t = config.train;
    const { processes, why } = await resolveProcesses(t.processes, t.device, env.trainer, env.env, t.batchSize * t.gradientAccumulation);
    const fields = { run: ctx.runId, attempt: env.attempt, host: hostname(), processes, processesWhy: why };
    log.info(restored.step ? 'training resumes from the newest checkpoint in the store' : 'training starts', { ...fields, fromStep: restored.step });

    const progress = new TrainingProgress(env, restored);
    const uploader = new CheckpointUploader(store, prefix, lease, out, (step) => progress.uploaded(step), log);
    const command = launchArgv(env.trainer, processes, trainerCommand({})[0]);
    const run = startTrainer(
      command,
      trainArgv(trainerArgs(config, { out, ...files })),
      (e) => {
        progress.onEvent(e);
        if (e.event === 'checkpoint') uploader.add(e.step, isAbsolute(e.path) ? e.path : resolve(out, e.path), progress.losses);
      },
      { logFile: join(out, 'trainer.log'), eventLog: join(out, 'trainer-events.jsonl'), env: trainerEnv(env.env) },
    );
    const { exit, lost } = await keepLeaseAlive(lease, run, { ttlMs: env.leaseTtlMs, signal: env.signal, log });
    await uploader.settle(exit.code === 0 && !!progress.done);
    env.signal.throwIfAborted();
    if (lost) throw lost;
    const done = progress.done;
    if (exit.code !== 0 || !done) {
      const err = failure(progress, exit);
      log.warn(err instanceof TrainerError ? 'training failed: not retryable' : 'training failed: the retry resumes from the newest checkpoint', {
        ...fields,
        step: progress.details.step,
        uploadedStep: progress.details.uploadedStep ?? restored.step,
        error: err.message.split('\n')[0],
      });
      throw err;
    }
    if (uploader.error) throw uploader.error;

    const adapterDir = isAbsolute(done.adapter) ? done.adapter : resolve(out, done.adapter);
    await lease.assertHeld();
    const adapter = await putDir(store, adapterDir, 'adapter', { base, steps: done.steps });
    const lossesRef = await store.putJsonl(progress.losses.sort((a, b) => a.step - b.step));
    const runtime = progress.runtime();
    log.info('training done', { ...fields, steps: done.steps, trainSeconds: done.train_seconds, device: runtime.device, uploads: uploader.uploaded.length });
    const result: TrainResult = {
      skipped: false,
      base,
      adapter,
      ...(input.initAdapter ? { initAdapter: input.initAdapter } : {}),
      steps: done.steps,
      resumedFromStep: progress.details.resumedFromStep ?? 0,
      trainSeconds: done.train_seconds,
      losses: lossesRef,
      runtime,
    };
    return { outputs: { adapter, losses: lossesRef }, result };
  } finally {
    await lease.release().catch((e: Error) => log.warn('could not release the training lease', { error: e.message }));
  }
}
