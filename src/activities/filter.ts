import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import type { FilterResult } from '../schemas/run';
import type { Item } from '../schemas/dataset';
import type { ArtifactRef } from '../schemas/artifacts';
import { isKnown, questionMessages, type GradeRecord } from './answering';
import { fingerprint, onceper, openStep, type StepCtx } from './context';
import { shardItems } from './prepare';

export type Decision = 'kept' | 'dropped' | 'replayed' | 'ungradeable';

export interface DecisionRecord {
  id: string;
  question: string;
  reference: string;
  answers: string[];
  grades: { correct: boolean; score: number; rationale: string }[];
  correct: number;
  graded: number;
  decision: Decision;
  why: string;
}

/** A stable pseudo-random draw per item, so replayed known items are the same on every retry. */
function draw(seed: number, id: string): number {
  return createHash('sha256').update(`${seed}:${id}`).digest().readUInt32BE(0) / 2 ** 32;
}

/**
 * Drops what the model already knows. The training set is the unknown items (plus, optionally, a
 * replayed fraction of known ones against forgetting); every item gets a decision with its reason.
 */
export async function filter({ ctx, shards }: { ctx: StepCtx; shards: number }): Promise<FilterResult> {
  const { store, config } = openStep(ctx);
  // Grade references are read from the store, not passed in: a million items would not fit a payload.
  const grades: ArtifactRef[] = [];
  for (let s = 0; s < shards; s++) {
    const rec = store.readStep(ctx.runId, `grade-${String(s).padStart(6, '0')}`);
    if (!rec) throw ApplicationFailure.nonRetryable(`shard ${s} of run ${ctx.runId} has not been graded`, 'MissingArtifact');
    grades.push(rec.outputs.grades);
  }
  const { knownThreshold, replayKnownFraction, seed } = config.filter;
  const fp = fingerprint('filter', grades.map((g) => g.sha256), config.filter, config.answer.systemPrompt);
  return onceper(store, ctx, 'filter', fp, Object.fromEntries(grades.map((g, i) => [`grades-${i}`, g])), async () => {
    const train: unknown[] = [];
    const decisions: DecisionRecord[] = [];
    const counts = { kept: 0, dropped: 0, ungradeable: 0, replayed: 0 };
    grades.forEach((ref, shard) => {
      const items = new Map(shardItems(store, ctx.runId, shard).map((i) => [i.id, i] as [string, Item]));
      for (const g of store.readJsonl<GradeRecord>(ref)) {
        const item = items.get(g.id);
        if (!item) throw ApplicationFailure.nonRetryable(`grade for unknown item ${g.id} in shard ${shard}`, 'Inconsistent');
        let decision: Decision;
        let why: string;
        if (g.status === 'ungradeable') {
          decision = 'ungradeable';
          why = `not graded (${g.error ?? 'no grade'}): neither trained on nor counted as wrong`;
        } else if (!isKnown(g, knownThreshold)) {
          decision = 'kept';
          why = `unknown: ${g.correct}/${g.graded} samples correct < ${knownThreshold}`;
        } else if (replayKnownFraction > 0 && draw(seed, g.id) < replayKnownFraction) {
          decision = 'replayed';
          why = `known (${g.correct}/${g.graded}) but replayed (replayKnownFraction ${replayKnownFraction})`;
        } else {
          decision = 'dropped';
          why = `known: ${g.correct}/${g.graded} samples correct >= ${knownThreshold}`;
        }
        counts[decision]++;
        if (decision === 'kept' || decision === 'replayed') {
          train.push({ messages: [...questionMessages(config, item.question), { role: 'assistant', content: item.answer }] });
        }
        decisions.push({
          id: g.id,
          question: item.question,
          reference: item.answer,
          answers: g.samples.map((s) => s.answer),
          grades: g.samples.map(({ correct, score, rationale }) => ({ correct, score, rationale })),
          correct: g.correct,
          graded: g.graded,
          decision,
          why,
        });
      }
    });
    const trainSet = store.writeJsonl(train);
    const decisionsRef = store.writeJsonl(decisions);
    const result: FilterResult = { trainSet, decisions: decisionsRef, ...counts };
    return { outputs: { trainSet, decisions: decisionsRef }, result };
  });
}
