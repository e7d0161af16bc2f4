import { accuracy, mcnemar } from '../metrics';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Item } from '../schemas/dataset';
import type { EvalResult, ModelUse, Paired, PassResult, StepCtx } from '../schemas/run';
import type { Delta, EvalItemResult, ItemGrade } from '../schemas/results';
import { fingerprint, once } from '../store/steps';
import { answerAndGradeSet } from './answering';
import type { StepEnv } from './env';
import { runConfig } from './step';

export interface PassInput {
  ctx: StepCtx;
  set: 'eval' | 'retention';
  items: ArtifactRef;
  model: ModelUse;
}

const right = (g: ItemGrade | undefined) => g?.status === 'graded' && g.greedy?.correct === true;

/** One model answers one set greedily; every answer is graded. Resumable like a shard. */
export async function evaluatePass(env: StepEnv, { ctx, set, items, model }: PassInput): Promise<PassResult> {
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  const step = `${set}-${model.label}`;
  const fp = fingerprint(
    step,
    items.sha256,
    config.model.baseUrl,
    model.name,
    model.adapter?.sha256 ?? null,
    config.answer.maxTokens,
    config.answer.systemPrompt,
    config.grader,
    config.train.seed,
  );
  // Evaluation passes run side by side, each with the whole request budget of a shard lane.
  const concurrency = config.answer.concurrency * Math.max(1, Math.floor(config.shardConcurrency / 2));
  return answerAndGradeSet(env, store, config, {
    ctx,
    step,
    fp,
    inputs: { items, ...(model.adapter ? { adapter: model.adapter } : {}) },
    items,
    model,
    phase: `${set} ${model.label}`,
    window: Math.max(config.answer.chunkSize, concurrency),
    concurrency,
    greedyOnly: true,
    summarise: (grades, ref) => {
      const graded = grades.filter((g) => g.status === 'graded');
      return { model, set, grades: ref, accuracy: accuracy(graded.filter(right).length, graded.length, grades.length - graded.length) };
    },
  });
}

export function paired(a: string, b: string, ga: ItemGrade[], gb: ItemGrade[]): Paired {
  let fixed = 0;
  let broken = 0;
  ga.forEach((x, i) => {
    const y = gb[i];
    if (x.status !== 'graded' || y?.status !== 'graded') return;
    if (!right(x) && right(y)) fixed++;
    if (right(x) && !right(y)) broken++;
  });
  return { a, b, fixed, broken, pValue: mcnemar(fixed, broken) };
}

/** Tuned against the reference model on one item (both must have been graded). */
function deltaOf(r: EvalItemResult['answers']['base'], t: EvalItemResult['answers']['tuned']): Delta {
  if (!t || !r) return 'base-only';
  if (r.status === 'ungradeable' || t.status === 'ungradeable') return 'ungradeable';
  if (r.correct && t.correct) return 'both-right';
  if (!r.correct && t.correct) return 'fixed';
  if (r.correct && !t.correct) return 'broken';
  return 'both-wrong';
}

/** One held-out item with every model's answer, and what tuning did to it. */
function itemResult(item: Item, i: number, grades: Map<string, ItemGrade[]>, refLabel: ModelUse['label']): EvalItemResult {
  const answers: EvalItemResult['answers'] = {};
  for (const [label, gs] of grades) {
    const g = gs[i];
    answers[label as ModelUse['label']] = {
      answer: g.greedy?.answer ?? g.answer ?? '',
      correct: right(g),
      status: g.status,
      rationale: g.greedy?.rationale ?? g.error,
    };
  }
  const delta = deltaOf(answers[refLabel], answers.tuned);
  return { id: item.id, question: item.question, reference: item.answer, ...(item.meta ? { meta: item.meta } : {}), answers, delta };
}

/** Item by item, base vs current vs tuned on the held-out set, plus retention: the figures the gate and the report use. */
export async function compareModels(
  env: StepEnv,
  { ctx, evalItems, passes }: { ctx: StepCtx; evalItems: ArtifactRef; passes: PassResult[] },
): Promise<EvalResult> {
  const store = await env.store(ctx.store);
  const fp = fingerprint(
    'compare',
    passes.map((p) => [p.set, p.model.label, p.grades.sha256]),
  );
  const inputs = Object.fromEntries(passes.map((p) => [`${p.set}-${p.model.label}`, p.grades]));
  return once(
    store,
    ctx,
    'compare',
    fp,
    inputs,
    async () => {
      const items = await store.jsonlAll<Item>(evalItems);
      const evalPasses = passes.filter((p) => p.set === 'eval');
      const grades = new Map<string, ItemGrade[]>();
      for (const p of evalPasses) grades.set(p.model.label, await store.jsonlAll<ItemGrade>(p.grades));
      const byLabel = (l: ModelUse['label']) => evalPasses.find((p) => p.model.label === l);
      const refLabel = byLabel('current') ? 'current' : 'base';
      const tuned = byLabel('tuned');
      const ref = await store.putJsonl(items.map((item, i) => itemResult(item, i, grades, refLabel)));
      const retention = passes.find((p) => p.set === 'retention');
      const result: EvalResult = {
        items: items.length,
        base: byLabel('base')!.accuracy,
        ...(byLabel('current') ? { current: byLabel('current')!.accuracy } : {}),
        ...(tuned
          ? { tuned: tuned.accuracy, tunedModel: tuned.model.name, vsReference: paired(refLabel, 'tuned', grades.get(refLabel)!, grades.get('tuned')!) }
          : {}),
        ...(retention ? { retention: retention.accuracy } : {}),
        passes,
        results: ref,
      };
      return { outputs: { results: ref }, result };
    },
    env,
  );
}
