import { ModelClient } from '../model/client';
import { accuracy } from '../metrics';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Item } from '../schemas/dataset';
import type { EvalResult, TrainResult } from '../schemas/run';
import { answerWith, gradeWith, type GradeRecord } from './answering';
import { isFailure, runChunked } from './chunks';
import { cancellationSignal, fingerprint, onceper, openStep, type StepCtx } from './context';
import { GIVE_UP_AT_ATTEMPT } from './shards';

export interface EvalItemResult {
  id: string;
  question: string;
  reference: string;
  base: { answer: string; correct: boolean; status: GradeRecord['status']; rationale?: string };
  tuned?: { answer: string; correct: boolean; status: GradeRecord['status']; rationale?: string };
  delta: 'fixed' | 'broken' | 'both-right' | 'both-wrong' | 'ungradeable' | 'base-only';
}

export function adapterModelName(runId: string): string {
  return `slearn-${runId}`.slice(0, 120);
}

/**
 * Answers and grades the evaluation set with the base model and, when there is an adapter, with the
 * tuned model (loaded into the endpoint through vLLM's adapter route), then compares them item by item.
 */
export async function evaluate({ ctx, evalItems, train }: { ctx: StepCtx; evalItems: ArtifactRef; train: TrainResult }): Promise<EvalResult> {
  const { store, config } = openStep(ctx);
  const fp = fingerprint('evaluate', evalItems.sha256, train.adapter?.ref.sha256 ?? null, config.model, config.answer, config.grader);
  return onceper(store, ctx, 'evaluate', fp, { evalItems, ...(train.adapter ? { adapter: train.adapter.ref } : {}) }, async () => {
    const items = store.readJsonl<Item>(evalItems);
    const client = new ModelClient(config.model);
    const judgeClient = config.grader.type === 'judge' ? new ModelClient(config.grader.model ?? config.model) : undefined;
    const signal = cancellationSignal();
    const grade = gradeWith(config, judgeClient, signal);

    const evalConcurrency = config.answer.concurrency * config.shardConcurrency;
    const pass = async (label: string, model: string | undefined) => {
      const answer = answerWith(client, config, model, signal);
      const out = await runChunked<Item, GradeRecord>({
        dir: store.runDir(ctx.runId, 'work', `eval-${label}`),
        items,
        // Evaluation runs alone, so it may use the whole request budget of the shards in flight;
        // a chunk must be at least that large or it would cap the concurrency.
        chunkSize: Math.max(config.answer.chunkSize, evalConcurrency),
        concurrency: evalConcurrency,
        giveUpAtAttempt: GIVE_UP_AT_ATTEMPT,
        work: async (item) => grade(item, await answer(item)),
      });
      return out.map((r, i): GradeRecord => (isFailure(r) ? { id: items[i].id, status: 'ungradeable', samples: [], correct: 0, graded: 0, error: r.error } : r));
    };

    const baseGrades = await pass('base', undefined);
    let tunedGrades: GradeRecord[] | undefined;
    let tunedModel: string | undefined;
    if (train.adapter) {
      tunedModel = adapterModelName(ctx.runId);
      await client.loadAdapter(tunedModel, train.adapter.path);
      tunedGrades = await pass('tuned', tunedModel);
    }

    const view = (g: GradeRecord) => ({
      answer: g.samples[0]?.answer ?? '',
      correct: g.status === 'graded' && g.correct / g.graded >= 0.5,
      status: g.status,
      rationale: g.samples[0]?.rationale ?? g.error,
    });
    const results: EvalItemResult[] = items.map((item, i) => {
      const b = view(baseGrades[i]);
      const t = tunedGrades ? view(tunedGrades[i]) : undefined;
      let delta: EvalItemResult['delta'] = 'base-only';
      if (t) {
        if (b.status === 'ungradeable' || t.status === 'ungradeable') delta = 'ungradeable';
        else if (b.correct && t.correct) delta = 'both-right';
        else if (!b.correct && t.correct) delta = 'fixed';
        else if (b.correct && !t.correct) delta = 'broken';
        else delta = 'both-wrong';
      }
      return { id: item.id, question: item.question, reference: item.answer, base: b, ...(t ? { tuned: t } : {}), delta };
    });
    const acc = (gs: GradeRecord[]) => {
      const graded = gs.filter((g) => g.status === 'graded');
      return accuracy(graded.filter((g) => g.correct / g.graded >= 0.5).length, graded.length, gs.length - graded.length);
    };
    const resultsRef = store.writeJsonl(results);
    const result: EvalResult = {
      items: items.length,
      base: acc(baseGrades),
      ...(tunedGrades ? { tuned: acc(tunedGrades), tunedModel } : {}),
      fixed: results.filter((r) => r.delta === 'fixed').length,
      broken: results.filter((r) => r.delta === 'broken').length,
      results: resultsRef,
    };
    return { outputs: { results: resultsRef }, result };
  });
}
