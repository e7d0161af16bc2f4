import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { judge } from '../grading/judge';
import { matchGrade } from '../grading/match';
import type { ModelClient } from '../model/client';
import type { Config } from '../schemas/config';
import type { Item } from '../schemas/dataset';
import { isFailure, type ItemFailure } from './chunks';

export interface AnswerRecord {
  id: string;
  answers: string[];
}

export interface SampleGrade {
  answer: string;
  correct: boolean;
  score: number;
  rationale: string;
}

export interface GradeRecord {
  id: string;
  status: 'graded' | 'ungradeable';
  samples: SampleGrade[];
  correct: number;
  graded: number;
  error?: string;
}

/** The same prompt is used to ask the model and to teach it, so training matches how it is asked. */
export function questionMessages(config: Config, question: string): ChatCompletionMessageParam[] {
  return [
    { role: 'system', content: config.answer.systemPrompt },
    { role: 'user', content: question },
  ];
}

export function answerWith(client: ModelClient, config: Config, model: string | undefined, signal?: AbortSignal) {
  return async (item: Item): Promise<AnswerRecord> => {
    const answers = await client.chat(questionMessages(config, item.question), {
      n: config.answer.samples,
      temperature: config.answer.temperature,
      maxTokens: config.answer.maxTokens,
      seed: config.train.seed,
      model,
      signal,
    });
    return { id: item.id, answers };
  };
}

export function gradeWith(config: Config, judgeClient: ModelClient | undefined, signal?: AbortSignal) {
  const g = config.grader;
  return async (item: Item, answered: AnswerRecord | ItemFailure): Promise<GradeRecord> => {
    if (isFailure(answered)) {
      return { id: item.id, status: 'ungradeable', samples: [], correct: 0, graded: 0, error: `answer failed: ${answered.error}` };
    }
    const samples: SampleGrade[] = [];
    const errors: string[] = [];
    for (const answer of answered.answers) {
      if (g.type === 'match') {
        samples.push({ answer, ...matchGrade(answer, item.answer, item.aliases, g.f1Threshold) });
        continue;
      }
      const out = await judge(judgeClient!, item, answer, { threshold: g.threshold, attempts: g.attempts, signal });
      if (out.verdict) samples.push({ answer, correct: out.verdict.correct, score: out.verdict.score, rationale: out.verdict.rationale });
      else errors.push(out.error!);
    }
    const correct = samples.filter((s) => s.correct).length;
    if (!samples.length) return { id: item.id, status: 'ungradeable', samples, correct: 0, graded: 0, error: errors[0] };
    return { id: item.id, status: 'graded', samples, correct, graded: samples.length, ...(errors.length ? { error: errors.join('; ') } : {}) };
  };
}

/** Known when at least `knownThreshold` of the graded samples are correct. */
export function isKnown(g: GradeRecord, knownThreshold: number): boolean {
  return g.status === 'graded' && g.graded > 0 && g.correct / g.graded >= knownThreshold - 1e-9;
}
