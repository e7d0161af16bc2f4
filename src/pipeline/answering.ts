import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { AdapterNotLoaded, ModelCallError } from '../errors';
import { judge } from '../grading/judge';
import { matchGrade } from '../grading/match';
import { classifyError, ModelClient } from '../model/client';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Config, Level } from '../schemas/config';
import type { Item } from '../schemas/dataset';
import type { WorkProgress } from '../schemas/progress';
import type { ItemGrade, SampleGrade } from '../schemas/results';
import type { ModelUse, StepCtx } from '../schemas/run';
import { once } from '../store/steps';
import type { Store } from '../store/store';
import { requireAdapter } from './adapters';
import type { StepEnv } from './env';
import { apiKey } from './policy';
import { clearWorkLater, workDir } from './step';
import { runItems } from './work';

/** The same prompt is used to ask the model and to teach it, so training matches how it is asked. */
export function questionMessages(config: Config, question: string): ChatCompletionMessageParam[] {
  return [
    { role: 'system', content: config.answer.systemPrompt },
    { role: 'user', content: question },
  ];
}

/**
 * Gekhman et al. (2024)'s categories from one greedy answer and the sampled ones:
 * Known (greedy and every sample right), MaybeKnown (greedy right, some sample wrong),
 * WeaklyKnown (greedy wrong, some sample right), Unknown (nothing right).
 */
export function knowledgeLevel(greedyCorrect: boolean, samplesCorrect: boolean[]): Level {
  if (greedyCorrect) return samplesCorrect.every(Boolean) ? 'known' : 'maybeKnown';
  return samplesCorrect.some(Boolean) ? 'weaklyKnown' : 'unknown';
}

export const ungradeable = (id: string, error: string): ItemGrade => ({ id, status: 'ungradeable', samples: [], error });

export function clients(env: StepEnv, config: Config): { model: ModelClient; judge?: ModelClient } {
  const model = new ModelClient(config.model, apiKey(env.policy, config.model, env.env));
  if (config.grader.type !== 'judge') return { model };
  const ep = config.grader.model ?? config.model;
  return { model, judge: ep === config.model ? model : new ModelClient(ep, apiKey(env.policy, ep, env.env, 'grader.model')) };
}

/**
 * Answers an item (greedy, plus `samples` sampled answers when the temperature is above 0) with
 * `model` (the endpoint's base model or a loaded adapter), then grades every answer. A judge that
 * never fits its schema leaves the answer ungraded; endpoint errors propagate to the caller,
 * which retries or reports the item.
 */
export function answerAndGrade(config: Config, c: { model: ModelClient; judge?: ModelClient }, modelName: string, opts: { greedyOnly?: boolean } = {}) {
  const g = config.grader;
  const grade = async (item: Item, answer: string, signal: AbortSignal): Promise<SampleGrade | string> => {
    if (g.type === 'match') return { answer, ...matchGrade(answer, item.answer, item.aliases, g) };
    const out = await judge(c.judge!, item, answer, { threshold: g.threshold, attempts: g.attempts, signal });
    if (!out.verdict) return out.error!;
    // The rule grader's verdict beside the judge's: the run measures its judge on its own items (κ, disagreements).
    const rule = matchGrade(answer, item.answer, item.aliases).correct;
    return { answer, correct: out.verdict.correct, score: out.verdict.score, rationale: out.verdict.rationale, rule };
  };
  const sampling = !opts.greedyOnly && config.answer.temperature > 0;
  return async (item: Item, signal: AbortSignal): Promise<ItemGrade> => {
    const messages = questionMessages(config, item.question);
    const common = { maxTokens: config.answer.maxTokens, seed: config.train.seed, model: modelName, signal };
    const ask = async (n: number, temperature: number) => {
      try {
        return await c.model.chat(messages, { ...common, n, temperature });
      } catch (e) {
        // An adapter that vanished (its server restarted) is not a configuration error: load it again.
        if (e instanceof ModelCallError && e.status === 404 && modelName !== config.model.name) throw new AdapterNotLoaded(modelName);
        throw e;
      }
    };
    const [greedyAnswer] = await ask(1, 0);
    const sampled = sampling ? await ask(config.answer.samples, config.answer.temperature) : [];
    const greedy = await grade(item, greedyAnswer, signal);
    if (typeof greedy === 'string') return { ...ungradeable(item.id, greedy), answer: greedyAnswer };
    const samples: SampleGrade[] = [];
    const errors: string[] = [];
    for (const a of sampled) {
      const s = await grade(item, a, signal);
      if (typeof s === 'string') errors.push(s);
      else samples.push(s);
    }
    return {
      id: item.id,
      status: 'graded',
      greedy,
      samples,
      level: knowledgeLevel(
        greedy.correct,
        samples.map((s) => s.correct),
      ),
      ...(errors.length ? { error: `${errors.length} sampled answer(s) not graded: ${errors[0]}` } : {}),
    };
  };
}

/** One set of items to answer and grade as one resumable step (a shard, or an evaluation pass). */
export interface AnswerSetSpec<R> {
  ctx: StepCtx;
  /** The step's name and fingerprint (its record, and where its parts are flushed). */
  step: string;
  fp: string;
  /** What the step record names as its inputs. */
  inputs: Record<string, ArtifactRef>;
  items: ArtifactRef;
  model: ModelUse;
  /** Shown in the heartbeat's progress ("answer-grade shard 3", "eval tuned"). */
  phase: string;
  window: number;
  concurrency: number;
  /** Evaluation asks the greedy answer only. */
  greedyOnly?: boolean;
  /** Live figures added to each heartbeat (answer-grade's known and unknown so far). */
  live?: (grade: ItemGrade) => Record<string, number>;
  /** The step's result from every item's grade and the stored grades. */
  summarise: (grades: ItemGrade[], ref: ArtifactRef) => R;
}

/**
 * The skeleton answering and evaluation share: once per fingerprint, the model (its adapter loaded
 * on the endpoint) answers every item through the sliding window, each answer is graded, the grades
 * are stored, and the step's parts are cleared once its record exists.
 */
export async function answerAndGradeSet<R>(env: StepEnv, store: Store, config: Config, spec: AnswerSetSpec<R>): Promise<R> {
  const { ctx, model } = spec;
  const dir = workDir(ctx.runId, spec.step, spec.fp);
  const result = await once(
    store,
    ctx,
    spec.step,
    spec.fp,
    spec.inputs,
    async () => {
      const list = await store.jsonlAll<Item>(spec.items);
      const c = clients(env, config);
      await requireAdapter(c.model, model.name, env.signal);
      const answer = answerAndGrade(config, c, model.name, { greedyOnly: spec.greedyOnly });
      let live: Record<string, number> = {};
      let last: WorkProgress | undefined;
      const grades = await runItems<Item, ItemGrade>({
        store,
        dir,
        phase: spec.phase,
        items: list,
        id: (x) => x.id,
        window: spec.window,
        concurrency: spec.concurrency,
        work: async (item, signal) => {
          const g = await answer(item, signal);
          if (spec.live) live = spec.live(g);
          return g;
        },
        fail: (item, error) => ungradeable(item.id, error),
        classify: (e) => classifyError(e, config.model),
        giveUp: env.giveUp,
        signal: env.signal,
        previous: env.previous as WorkProgress | undefined,
        onProgress: (p) => {
          last = p;
          env.progress({ ...p, ...live });
        },
      });
      env.log.info('items answered and graded', {
        phase: spec.phase,
        items: grades.length,
        resumed: last?.resumed ?? 0,
        ungradeable: grades.filter((g) => g.status === 'ungradeable').length,
        askedAgain: last?.retries ?? 0,
      });
      const ref = await store.putJsonl(grades);
      return { outputs: { grades: ref }, result: spec.summarise(grades, ref) };
    },
    env,
  );
  clearWorkLater(env, store, dir);
  return result;
}
