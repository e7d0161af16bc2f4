import { pct } from '../metrics';
import { Registry } from '../registry/registry';
import type { Config } from '../schemas/config';
import type { ModelVersion } from '../schemas/registry';
import type { Baseline, EvalResult, FilterResult, JudgeAgreement, ModelUse, Prepared, PromotionDecision, StepCtx, TrainResult } from '../schemas/run';
import { fingerprint, once } from '../store/steps';
import { settingsSha } from './current';
import type { StepEnv } from './env';
import { runConfig } from './step';

/** The promotion gate: better than the model in service on the held-out set, and not forgetting what the model knew. */

/** What the registry keeps of a run's judge agreement: the figure and its words, not the examples. */
const judgeAgreementOf = ({ items, kappa, low, high, words }: JudgeAgreement) => ({ items, kappa, low, high, words });

export function gate(p: Config['promote'], ev: EvalResult, hasCurrent: boolean): { pass: boolean; reason: string; gain: number; forgetting?: number } {
  const reference = hasCurrent && ev.current ? ev.current : ev.base;
  const refName = hasCurrent ? 'current' : 'base';
  const tuned = ev.tuned!;
  const gain = tuned.accuracy - reference.accuracy;
  const forgetting = ev.retention && ev.retention.total ? 1 - ev.retention.accuracy : undefined;
  const parts = [`tuned ${pct(tuned.accuracy)} vs ${refName} ${pct(reference.accuracy)} on ${ev.items} held-out items: gain ${(gain * 100).toFixed(1)} points`];
  let pass = true;
  if (!(gain > p.minGain)) {
    pass = false;
    parts[0] += ` (needs more than ${(p.minGain * 100).toFixed(1)})`;
  }
  if (forgetting !== undefined) {
    const ok = forgetting <= p.maxForgetting;
    parts.push(`forgot ${pct(forgetting)} of ${ev.retention!.total} known items (at most ${pct(p.maxForgetting)} allowed)`);
    if (!ok) pass = false;
  } else parts.push('no retention check (no known items, or retentionSample 0)');
  if (ev.vsReference) parts.push(`${ev.vsReference.fixed} fixed, ${ev.vsReference.broken} broken, McNemar p=${ev.vsReference.pValue.toPrecision(2)}`);
  if (!p.enabled && pass) {
    pass = false;
    parts.push('promotion is disabled for this config (promote.enabled: false)');
  }
  return { pass, reason: `${pass ? 'promoted' : 'refused'}: ${parts.join('; ')}`, gain, ...(forgetting !== undefined ? { forgetting } : {}) };
}

export interface PromoteInput {
  ctx: StepCtx;
  prepared: Pick<Prepared, 'dataSha' | 'trainItems'>;
  current: ModelUse | null;
  filter?: FilterResult;
  train?: TrainResult;
  evaluation?: EvalResult;
  baseline?: Baseline;
  nothingNew?: string;
}

/** Records the run and its tuned model in the registry, and moves `current` when the gate says so. */
export async function promote(env: StepEnv, input: PromoteInput): Promise<PromotionDecision> {
  const { ctx, prepared, current, train, evaluation } = input;
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  const reg = new Registry(store, config.name);
  const fp = fingerprint('promote', evaluation?.results.sha256 ?? null, train?.adapter?.sha256 ?? null, config.promote, input.nothingNew ?? null);
  return once(
    store,
    ctx,
    'promote',
    fp,
    {},
    async () => {
      const at = new Date().toISOString();
      const base = { runId: ctx.runId, at, dataSha: prepared.dataSha, settingsSha: settingsSha(config), currentVersion: current?.version ?? null };
      let decision: PromotionDecision;
      if (input.baseline) {
        const what = input.baseline.kind === 'variant' ? `variant (${input.baseline.label})` : `${input.baseline.kind} baseline`;
        decision = { promoted: false, reason: `a ${what} run: compared, never promoted` };
      } else if (input.nothingNew) {
        await reg.recordRun({ ...base, outcome: 'nothing-new', reason: input.nothingNew });
        decision = { promoted: false, reason: input.nothingNew };
      } else if (!train || train.skipped || !train.adapter || !evaluation?.tuned || !input.filter) {
        decision = { promoted: false, reason: 'nothing to train on: the model already knew every item' };
        await reg.recordRun({ ...base, outcome: 'no-training', reason: decision.reason });
      } else {
        const g = gate(config.promote, evaluation, Boolean(current));
        const version: ModelVersion = await reg.add({
          createdAt: at,
          runId: ctx.runId,
          base: train.base,
          adapter: train.adapter,
          ...(current?.version ? { parent: current.version } : {}),
          dataSha: prepared.dataSha,
          trainItems: input.filter.kept + input.filter.replayed,
          steps: train.steps,
          trainSeconds: train.trainSeconds,
          runtime: { ...(train.runtime ?? {}) },
          evaluation: {
            items: evaluation.items,
            base: evaluation.base,
            ...(evaluation.current ? { current: evaluation.current } : {}),
            tuned: evaluation.tuned,
            ...(evaluation.retention ? { retention: evaluation.retention, retentionSet: input.filter.retention.sha256 } : {}),
            gain: g.gain,
            ...(g.forgetting !== undefined ? { forgetting: g.forgetting } : {}),
            ...(evaluation.vsReference ? { pValue: evaluation.vsReference.pValue } : {}),
            ...(input.filter.agreement ? { judgeAgreement: judgeAgreementOf(input.filter.agreement) } : {}),
          },
          decision: { promoted: g.pass, reason: g.reason },
        });
        if (g.pass && (await reg.aliasLog()).at(-1)?.runId !== ctx.runId) await reg.setCurrent(version.version, 'gate', g.reason, ctx.runId);
        await reg.recordRun({
          ...base,
          outcome: g.pass ? 'promoted' : 'refused',
          version: version.version,
          reason: g.reason,
          tunedAccuracy: evaluation.tuned.accuracy,
          ...(evaluation.retention ? { retention: evaluation.retention.accuracy } : {}),
        });
        decision = {
          promoted: g.pass,
          reason: g.reason,
          version: version.version,
          gain: g.gain,
          ...(g.forgetting !== undefined ? { forgetting: g.forgetting } : {}),
        };
      }
      return { outputs: {}, result: decision };
    },
    env,
  );
}
