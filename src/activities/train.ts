import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { sha256File } from '../artifacts/store';
import type { ArtifactRef } from '../schemas/artifacts';
import type { TrainProgress, TrainResult } from '../schemas/run';
import { fingerprint, inActivity, onceper, openStep, type StepCtx } from './context';
import { startTrainer, stopGroup, TrainLock, type TrainerEvent } from './trainer-process';

export const TRAIN_PROGRESS_SIGNAL = 'trainProgress';

export interface TrainDeps {
  /** argv prefix of a trainer that implements the contract, e.g. ['.venv/bin/python', '-m', 'slearn_trainer']. */
  trainerCommand: string[];
  /** How long a lock from another host stays valid without updates. */
  lockStaleMs?: number;
}

export interface TrainInput {
  ctx: StepCtx;
  trainSet: ArtifactRef;
}

function adapterManifest(dir: string): { name: string; sha256: string; bytes: number }[] {
  return readdirSync(dir)
    .filter((f) => statSync(join(dir, f)).isFile())
    .sort()
    .map((name) => ({ name, sha256: sha256File(join(dir, name)), bytes: statSync(join(dir, name)).size }));
}

export function makeTrain(deps: TrainDeps) {
  /**
   * Fine-tunes on the training set through the trainer contract. The trainer resumes from its own
   * newest checkpoint; this activity heartbeats its progress, keeps one trainer per output directory,
   * and stops the trainer's process group when the activity is cancelled.
   */
  return async function train({ ctx, trainSet }: TrainInput): Promise<TrainResult> {
    const { store, config } = openStep(ctx);
    const base = config.train.base ?? config.model.name;
    if (!trainSet.count) return { skipped: true, base, steps: 0, resumedFromStep: 0, trainSeconds: 0 };
    const t = config.train;
    const fp = fingerprint('train', trainSet.sha256, base, t);
    return onceper(store, ctx, 'train', fp, { trainSet }, async () => {
      const out = store.runDir(ctx.runId, 'train');
      mkdirSync(out, { recursive: true });
      const data = join(out, 'train.jsonl');
      if (!existsSync(data) || sha256File(data) !== trainSet.sha256) copyFileSync(store.path(trainSet), data);

      const lock = new TrainLock(join(out, '.slearn-train.lock'), deps.lockStaleMs ?? 5 * 60_000);
      const busy = await lock.acquire();
      if (busy) throw ApplicationFailure.create({ message: busy, type: 'TrainerBusy', nextRetryDelay: '10s' });

      const progress: TrainProgress = { step: 0, totalSteps: 0 };
      let doneEvent: Extract<TrainerEvent, { event: 'done' }> | undefined;
      let errorEvent: Extract<TrainerEvent, { event: 'error' }> | undefined;
      const losses: { step: number; loss: number; epoch?: number }[] = [];
      let lastSignal = 0;
      let firstStep: { step: number; t: number } | undefined;
      const report = (force = false) => {
        if (!inActivity()) return;
        const c = Context.current();
        c.heartbeat(progress);
        if (!force && Date.now() - lastSignal < 3000) return;
        lastSignal = Date.now();
        // The workflow's `progress` query shows step and loss; a lost signal only delays that view.
        try {
          c.client.workflow.getHandle(c.info.workflowExecution?.workflowId ?? ctx.runId).signal(TRAIN_PROGRESS_SIGNAL, { ...progress }).catch(() => undefined);
        } catch {
          /* no client in this context (unit tests) */
        }
      };

      const args = [
        'train', '--base', base, '--data', data, '--out', out,
        '--epochs', String(t.epochs), '--lr', String(t.learningRate), '--lora-r', String(t.loraR),
        '--lora-alpha', String(t.loraAlpha), '--save-steps', String(t.saveSteps), '--seed', String(t.seed),
        ...t.extraArgs,
      ];
      const run = startTrainer(deps.trainerCommand, args, (e) => {
        switch (e.event) {
          case 'start':
            progress.totalSteps = e.total_steps;
            progress.resumedFromStep = e.resumed_from_step;
            progress.step = e.resumed_from_step;
            return report(true);
          case 'progress':
            firstStep ??= { step: e.step, t: Date.now() };
            if (e.step > firstStep.step) progress.stepsPerSecond = (e.step - firstStep.step) / ((Date.now() - firstStep.t) / 1000);
            progress.step = e.step;
            progress.totalSteps = e.total_steps;
            if (typeof e.loss === 'number') {
              progress.loss = e.loss;
              const point = { step: e.step, loss: e.loss, epoch: e.epoch };
              losses.push(point);
              appendFileSync(join(out, 'losses.jsonl'), JSON.stringify(point) + '\n');
            }
            return report();
          case 'checkpoint':
            progress.checkpoint = e.path;
            return report(true);
          case 'done':
            doneEvent = e;
            return;
          case 'error':
            errorEvent = e;
        }
      }, join(out, 'trainer.log'));
      lock.update(run.child.pid ?? 0);
      // Keep the heartbeat alive while the trainer loads its model and prints nothing yet: well
      // inside the heartbeat timeout, whatever the run configured it to.
      const timeoutMs = inActivity() ? (Context.current().info.heartbeatTimeoutMs ?? 60_000) : 60_000;
      const ticker = setInterval(() => report(), Math.max(250, Math.min(5000, timeoutMs / 4)));
      let cancelled: unknown;
      if (inActivity()) {
        Context.current().cancelled.catch(async (err) => {
          cancelled = err;
          if (run.child.pid) await stopGroup(run.child.pid, 5000);
        });
      }
      let exit;
      try {
        exit = await run.done;
      } finally {
        clearInterval(ticker);
        lock.release();
      }
      if (cancelled) throw cancelled;
      if (exit.code !== 0 || !doneEvent) {
        const why = errorEvent?.message ?? `trainer exited with ${exit.signal ?? `code ${exit.code}`}: ${exit.stderrTail.slice(-8).join('\n')}`;
        if (errorEvent && errorEvent.retryable === false) throw ApplicationFailure.nonRetryable(why, 'TrainerError');
        throw ApplicationFailure.create({ message: why, type: 'TrainerFailed' });
      }
      const adapterDir = isAbsolute(doneEvent.adapter) ? doneEvent.adapter : resolve(out, doneEvent.adapter);
      const manifest = store.writeJson({ base, dir: relative(store.root, adapterDir), files: adapterManifest(adapterDir) });
      const lossesRef = store.writeJsonl(mergeLosses(out, losses));
      const result: TrainResult = {
        skipped: false,
        base,
        adapter: { path: adapterDir, ref: manifest },
        steps: doneEvent.steps,
        resumedFromStep: progress.resumedFromStep ?? 0,
        trainSeconds: doneEvent.train_seconds,
        losses: lossesRef,
      };
      return { outputs: { adapter: manifest, losses: lossesRef }, result };
    });
  };
}

/** Loss points survive worker crashes in losses.jsonl beside the checkpoints; later attempts win per step. */
function mergeLosses(out: string, fresh: { step: number; loss: number; epoch?: number }[]) {
  const file = join(out, 'losses.jsonl');
  const byStep = new Map<number, { step: number; loss: number; epoch?: number }>();
  if (existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      try {
        const p = JSON.parse(line);
        byStep.set(p.step, p);
      } catch {
        /* a line cut by a crash */
      }
    }
  }
  for (const p of fresh) byStep.set(p.step, p);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}
