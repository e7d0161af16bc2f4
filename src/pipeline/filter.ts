import type { ArtifactRef } from '../schemas/artifacts';
import { LEVELS, type Config } from '../schemas/config';
import type { Item } from '../schemas/dataset';
import type { Baseline, FilterResult, Prepared, StepCtx } from '../schemas/run';
import { fingerprint, once } from '../store/steps';
import type { Store } from '../store/store';
import { Registry } from '../registry/registry';
import type { RetentionSet } from '../schemas/registry';
import type { Decision, DecisionRecord, ItemGrade } from '../schemas/results';
import { questionMessages } from './answering';
import type { StepEnv } from './env';
import { InvalidInput } from '../errors';
import { draw } from './prepare';
import { emptyLevels, runConfig } from './step';
import { JudgeTally } from './agreement';

/** The self-learning decision for one graded item: train on its level, replay a share of the rest. */
export function decide(g: ItemGrade, f: Config['filter']): { decision: Decision; why: string } {
  if (g.status === 'ungradeable') return { decision: 'ungradeable', why: `not graded (${g.error ?? 'no grade'}): neither trained on nor counted as wrong` };
  const level = g.level!;
  const detail = `greedy ${g.greedy?.correct ? 'right' : 'wrong'}${g.samples.length ? `, ${g.samples.filter((s) => s.correct).length}/${g.samples.length} samples right` : ''}`;
  if (f.trainOn.includes(level)) return { decision: 'kept', why: `${level} (${detail}): trained on` };
  if (f.replayFraction > 0 && draw(f.seed, g.id, 'replay') < f.replayFraction) {
    return { decision: 'replayed', why: `${level} (${detail}) but replayed (replayFraction ${f.replayFraction})` };
  }
  return { decision: 'dropped', why: `${level} (${detail}): already known, not trained on` };
}

/** The k items with the smallest draw, kept in a bounded max-heap: a sample of a stream in O(k) memory. */
class Smallest<T> {
  private heap: { key: number; value: T }[] = [];
  constructor(private readonly k: number) {}
  add(key: number, value: T): void {
    if (this.k <= 0) return;
    const h = this.heap;
    if (h.length < this.k) {
      h.push({ key, value });
      for (let i = h.length - 1; i > 0;) {
        const p = (i - 1) >> 1;
        if (h[p].key >= h[i].key) break;
        [h[p], h[i]] = [h[i], h[p]];
        i = p;
      }
    } else if (key < h[0].key) {
      h[0] = { key, value };
      for (let i = 0; ;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l].key > h[m].key) m = l;
        if (r < h.length && h[r].key > h[m].key) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
  }
  sorted(): T[] {
    return [...this.heap].sort((a, b) => a.key - b.key).map((x) => x.value);
  }
}

export interface FilterInput {
  ctx: StepCtx;
  prepared: Pick<Prepared, 'shardIndex'>;
  /** Each shard's grades, in shard order. */
  grades: ArtifactRef[];
  baseline?: Baseline;
}

async function* graded(store: Store, prepared: FilterInput['prepared'], grades: ArtifactRef[]): AsyncGenerator<{ item: Item; grade: ItemGrade }> {
  let s = 0;
  for await (const shardItems of store.jsonl<ArtifactRef>(prepared.shardIndex)) {
    const ref = grades[s++];
    if (!ref) throw new InvalidInput(`no grades for shard ${s - 1}`);
    const items = new Map((await store.jsonlAll<Item>(shardItems)).map((i) => [i.id, i]));
    for await (const grade of store.jsonl<ItemGrade>(ref)) {
      const item = items.get(grade.id);
      if (!item) throw new InvalidInput(`a grade for item ${grade.id}, which is not in shard ${s - 1}`);
      yield { item, grade };
    }
  }
}

/**
 * The config's fixed retention set (see RetentionSetSchema): the one in the registry, or, on the
 * first run that needs one, the `retentionSample` items (at most half of the candidates) with the
 * smallest seeded draw among those the model answered right and this run's levels do not train on.
 */
async function retentionSet(store: Store, ctx: StepCtx, config: Config, prepared: FilterInput['prepared'], grades: ArtifactRef[]): Promise<RetentionSet> {
  const f = config.filter;
  const sample = config.promote.retentionSample;
  const reg = new Registry(store, config.name);
  const fixed = await reg.retentionSet(sample, f.seed);
  if (fixed) return fixed;
  const chosen = new Smallest<Item>(sample);
  let candidates = 0;
  for await (const { item, grade } of graded(store, prepared, grades)) {
    if (grade.status === 'graded' && grade.greedy?.correct && grade.level && !f.trainOn.includes(grade.level)) {
      candidates++;
      chosen.add(draw(f.seed, item.id, 'retention'), item);
    }
  }
  // At most half of the candidates, so that replay (filter.replayFraction) has known items left to mix in.
  const items = chosen.sorted().slice(0, Math.floor(candidates / 2));
  const levels = LEVELS.filter((l) => !f.trainOn.includes(l) && l !== 'weaklyKnown' && l !== 'unknown');
  return reg.fixRetentionSet({
    items: await store.putJsonl(items),
    count: items.length,
    sample,
    seed: f.seed,
    drawnFrom: `answered right by the model in service, at levels not trained on (${levels.join(', ') || 'none'})`,
    runId: ctx.runId,
    at: new Date().toISOString(),
  });
}

/**
 * Drops what the model already knows. The training set is the items at the levels the policy
 * trains on (plus a replayed share of the rest); every item gets a decision with its reason. A
 * baseline selects differently from the same grades: everything (`full`), or a seeded random
 * subset of the same size as self-learning's (`random`). No run trains on the config's fixed
 * retention set. Streams: memory stays O(shard + sample).
 */
export async function filter(env: StepEnv, { ctx, prepared, grades, baseline }: FilterInput): Promise<FilterResult> {
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  const f = config.filter;
  const retention = await retentionSet(store, ctx, config, prepared, grades);
  const fp = fingerprint(
    'filter',
    grades.map((g) => g.sha256),
    f,
    config.answer.systemPrompt,
    retention.items.sha256,
    baseline ?? null,
  );
  const inputs = Object.fromEntries(grades.map((g, i) => [`grades-${i}`, g]));
  return once(
    store,
    ctx,
    'filter',
    fp,
    inputs,
    async () => {
      const held = new Set((await store.jsonlAll<Item>(retention.items)).map((i) => i.id));
      // A random baseline takes the `size` gradeable items with the smallest seeded draw.
      let randomCut = Infinity;
      if (baseline?.kind === 'random') {
        const keys = new Smallest<number>(baseline.size);
        for await (const { grade } of graded(store, prepared, grades)) {
          if (grade.status === 'graded' && !held.has(grade.id)) {
            const d = draw(baseline.seed, grade.id, 'random');
            keys.add(d, d);
          }
        }
        randomCut = keys.sorted().at(-1) ?? -1;
      }
      const trainSet = await store.writer();
      // KnownPatch: replayed items go to a set of their own, which the trainer mixes in late.
      const lateSet = f.replayWhen === 'late' ? await store.writer() : trainSet;
      const decisions = await store.writer();
      const counts = { kept: 0, dropped: 0, ungradeable: 0, replayed: 0 };
      const levels = emptyLevels();
      const judged = new JudgeTally(f.seed);
      for await (const { item, grade } of graded(store, prepared, grades)) {
        judged.add(item, grade);
        let { decision, why } = decide(grade, f);
        if (grade.level) levels[grade.level]++;
        if (baseline && (baseline.kind === 'full' || baseline.kind === 'random') && decision !== 'ungradeable') {
          const take = baseline.kind === 'full' || draw(baseline.seed, item.id, 'random') <= randomCut;
          decision = take ? 'kept' : 'dropped';
          why = `${baseline.kind} baseline: ${take ? 'selected' : 'not selected'} (self-learning: ${why})`;
        }
        if (held.has(item.id) && decision !== 'ungradeable') {
          decision = 'dropped';
          why = `${why}; in the fixed retention set: asked again after tuning, never trained on`;
        }
        counts[decision]++;
        if (decision === 'kept' || decision === 'replayed') {
          // A replayed item may be taught the model's own right answer: what it already says, kept as it is.
          const own = decision === 'replayed' && f.replayAnswer === 'model' ? grade.greedy?.answer : undefined;
          const row = { messages: [...questionMessages(config, item.question), { role: 'assistant', content: own ?? item.answer }] };
          await (decision === 'replayed' ? lateSet : trainSet).row(row);
        }
        const answers = [grade.greedy?.answer ?? grade.answer, ...grade.samples.map((s) => s.answer)].filter((a): a is string => a !== undefined);
        const sampleGrades = [grade.greedy, ...grade.samples]
          .filter((s) => s !== undefined)
          .map(({ correct, score, rationale, rule }) => ({ correct, score, rationale, ...(rule !== undefined ? { rule } : {}) }));
        await decisions.row({
          id: item.id,
          question: item.question,
          reference: item.answer,
          ...(item.meta ? { meta: item.meta } : {}),
          ...(grade.level ? { level: grade.level } : {}),
          answers,
          grades: sampleGrades,
          decision,
          why,
        } satisfies DecisionRecord);
      }
      const trainRef = await trainSet.finish(trainSet.rows);
      const lateRef = lateSet !== trainSet ? await lateSet.finish(lateSet.rows) : undefined;
      const decisionsRef = await decisions.finish(decisions.rows);
      const late: { lateSet?: ArtifactRef } = lateRef?.count ? { lateSet: lateRef } : {};
      const outputs: Record<string, ArtifactRef> = { trainSet: trainRef, decisions: decisionsRef, retention: retention.items };
      if (late.lateSet) outputs.lateSet = late.lateSet;
      const agreement = judged.result();
      const result: FilterResult = {
        trainSet: trainRef,
        ...late,
        decisions: decisionsRef,
        retention: retention.items,
        ...counts,
        levels,
        ...(agreement ? { agreement } : {}),
      };
      return { outputs, result };
    },
    env,
  );
}
