import { ModelClient } from '../model/client';
import type { ShardResult } from '../schemas/run';
import type { Item } from '../schemas/dataset';
import { answerWith, gradeWith, isKnown, type AnswerRecord, type GradeRecord } from './answering';
import { runChunked, isFailure, type ItemFailure } from './chunks';
import { cancellationSignal, fingerprint, onceper, openStep, type StepCtx } from './context';
import { shardItems } from './prepare';

/** After this many attempts of one shard, items that still fail are reported instead of retried. */
export const GIVE_UP_AT_ATTEMPT = 5;

const pad = (n: number) => String(n).padStart(6, '0');

export interface ShardInput {
  ctx: StepCtx;
  shard: number;
}

/** The model under adaptation answers one shard, `samples` answers per question. */
export async function answerShard({ ctx, shard }: ShardInput): Promise<ShardResult> {
  const { store, config } = openStep(ctx);
  const items = shardItems(store, ctx.runId, shard);
  const itemsRef = store.writeJsonl(items);
  const fp = fingerprint('answer', itemsRef.sha256, config.model.baseUrl, config.model.name, config.answer, config.train.seed);
  return onceper(store, ctx, `answer-${pad(shard)}`, fp, { items: itemsRef }, async () => {
    const client = new ModelClient(config.model);
    const records = await runChunked<Item, AnswerRecord>({
      dir: store.runDir(ctx.runId, 'work', `answer-${pad(shard)}`),
      items,
      chunkSize: config.answer.chunkSize,
      concurrency: config.answer.concurrency,
      giveUpAtAttempt: GIVE_UP_AT_ATTEMPT,
      work: answerWith(client, config, undefined, cancellationSignal()),
    });
    const answers = store.writeJsonl(records);
    const failed = records.filter(isFailure).length;
    const result: ShardResult = {
      shard,
      answers,
      counts: { answered: records.length - failed, graded: 0, known: 0, unknown: 0, ungradeable: failed },
    };
    return { outputs: { answers }, result };
  });
}

/** Grades one answered shard against the references and counts known / unknown / ungradeable. */
export async function gradeShard({ ctx, shard, answers }: ShardInput & { answers: ShardResult['answers'] }): Promise<ShardResult> {
  const { store, config } = openStep(ctx);
  const items = shardItems(store, ctx.runId, shard);
  const fp = fingerprint('grade', answers.sha256, config.grader, config.filter.knownThreshold, config.model.baseUrl, config.model.name);
  return onceper(store, ctx, `grade-${pad(shard)}`, fp, { answers }, async () => {
    const answered = new Map(store.readJsonl<AnswerRecord | ItemFailure>(answers).map((a) => [a.id, a]));
    const judgeClient = config.grader.type === 'judge' ? new ModelClient(config.grader.model ?? config.model) : undefined;
    const grade = gradeWith(config, judgeClient, cancellationSignal());
    const records = await runChunked<Item, GradeRecord>({
      dir: store.runDir(ctx.runId, 'work', `grade-${pad(shard)}`),
      items,
      chunkSize: config.answer.chunkSize,
      concurrency: config.answer.concurrency,
      giveUpAtAttempt: GIVE_UP_AT_ATTEMPT,
      work: (item) => grade(item, answered.get(item.id) ?? { id: item.id, error: 'no answer recorded' }),
    });
    const grades = records.map((r, i): GradeRecord =>
      isFailure(r) ? { id: items[i].id, status: 'ungradeable', samples: [], correct: 0, graded: 0, error: `grading failed: ${r.error}` } : r,
    );
    const gradesRef = store.writeJsonl(grades);
    const ungradeable = grades.filter((g) => g.status === 'ungradeable').length;
    const known = grades.filter((g) => isKnown(g, config.filter.knownThreshold)).length;
    const result: ShardResult = {
      shard,
      answers,
      grades: gradesRef,
      counts: { answered: grades.length - grades.filter((g) => g.error?.startsWith('answer failed')).length, graded: grades.length - ungradeable, known, unknown: grades.length - ungradeable - known, ungradeable },
    };
    return { outputs: { grades: gradesRef }, result };
  });
}
