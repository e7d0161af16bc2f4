import { accuracy, mcnemar } from '../metrics';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Item } from '../schemas/dataset';
import type { EvalResult, ModelUse, Paired, PassResult, StepCtx } from '../schemas/run';
import { fingerprint, once } from '../store/steps';
import { requireAdapter } from './adapters';
import { answerAndGrade, clients, ungradeable, type ItemGrade } from './answering';
import type { StepEnv } from './env';
import { clearWork, loadConfig, workDir } from './shards';
import { runItems, type WorkProgress } from './work';

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
  const config = await loadConfig(store, ctx);
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
  const dir = workDir(ctx.runId, step, fp);
  const result = await once(store, ctx, step, fp, { items, ...(model.adapter ? { adapter: model.adapter } : {}) }, async () => {
    const list = await store.jsonlAll<Item>(items);
    const c = clients(env, config);
    await requireAdapter(c.model, model.name, env.signal);
    // Evaluation passes run side by side, each with the whole request budget of a shard lane.
    const concurrency = config.answer.concurrency * Math.max(1, Math.floor(config.shardConcurrency / 2));
    const grades = await runItems<Item, ItemGrade>({
      store,
      dir,
      phase: `${set} ${model.label}`,
      items: list,
      id: (x) => x.id,
      window: Math.max(config.answer.chunkSize, concurrency),
      concurrency,
      work: answerAndGrade(config, c, model.name, { greedyOnly: true }),
      fail: (item, error) => ungradeable(item.id, error),
      giveUp: env.giveUp,
      signal: env.signal,
      previous: env.previous as WorkProgress | undefined,
      onProgress: (p) => env.progress(p),
    });
    const ref = await store.putJsonl(grades);
    const graded = grades.filter((g) => g.status === 'graded');
    const pass: PassResult = { model, set, grades: ref, accuracy: accuracy(graded.filter(right).length, graded.length, grades.length - graded.length) };
    return { outputs: { grades: ref }, result: pass };
  });
  // The parts are no longer needed once the step record exists; removing them is not the step's work.
  void clearWork(store, dir).catch(() => undefined);
  return result;
}

export type Delta = 'fixed' | 'broken' | 'both-right' | 'both-wrong' | 'ungradeable' | 'base-only';

export interface EvalItemResult {
  id: string;
  question: string;
  reference: string;
  meta?: Record<string, unknown>;
  answers: Partial<Record<ModelUse['label'], { answer: string; correct: boolean; status: ItemGrade['status']; rationale?: string }>>;
  /** Tuned against the reference model (current, else base). */
  delta: Delta;
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
  return once(store, ctx, 'compare', fp, Object.fromEntries(passes.map((p) => [`${p.set}-${p.model.label}`, p.grades])), async () => {
    const items = await store.jsonlAll<Item>(evalItems);
    const evalPasses = passes.filter((p) => p.set === 'eval');
    const grades = new Map<string, ItemGrade[]>();
    for (const p of evalPasses) grades.set(p.model.label, await store.jsonlAll<ItemGrade>(p.grades));
    const byLabel = (l: ModelUse['label']) => evalPasses.find((p) => p.model.label === l);
    const refLabel = byLabel('current') ? 'current' : 'base';
    const tuned = byLabel('tuned');
    const results: EvalItemResult[] = items.map((item, i) => {
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
      const r = answers[refLabel];
      const t = answers.tuned;
      let delta: Delta = 'base-only';
      if (t && r) {
        if (r.status === 'ungradeable' || t.status === 'ungradeable') delta = 'ungradeable';
        else if (r.correct && t.correct) delta = 'both-right';
        else if (!r.correct && t.correct) delta = 'fixed';
        else if (r.correct && !t.correct) delta = 'broken';
        else delta = 'both-wrong';
      }
      return { id: item.id, question: item.question, reference: item.answer, ...(item.meta ? { meta: item.meta } : {}), answers, delta };
    });
    const ref = await store.putJsonl(results);
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
  });
}
