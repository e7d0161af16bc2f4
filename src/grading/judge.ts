import { z } from 'zod';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { ModelCallError } from '../errors';
import type { ModelClient } from '../model/client';

/** What the judge must return; sent to the endpoint as a JSON schema and checked on the way back. */
export const JudgeVerdictSchema = z.strictObject({
  score: z.number().min(0).max(1),
  correct: z.boolean(),
  rationale: z.string(),
});
export type JudgeVerdict = z.infer<typeof JudgeVerdictSchema>;

const verdictJsonSchema = z.toJSONSchema(JudgeVerdictSchema) as Record<string, unknown>;
delete verdictJsonSchema.$schema;

export const JUDGE_RUBRIC = [
  'You grade answers to domain questions against a reference answer.',
  'The candidate is correct when it states the same fact as the reference or one of the accepted aliases;',
  'extra words are fine, a different or hedged fact is not.',
  'Reply with JSON only: {"score": number from 0 to 1, "correct": true or false, "rationale": one short sentence}.',
].join(' ');

/**
 * Where the candidate stands in the judge's prompt: after the reference (the default), or before
 * it, to measure how much the verdict depends on the order (bench/judge.ts counts the flips).
 */
export type JudgeOrder = 'reference-first' | 'candidate-first';

/** The judge's user message; its line labels are part of the contract with test endpoints. */
export function judgeMessages(
  question: string,
  reference: string,
  aliases: string[] | undefined,
  candidate: string,
  order: JudgeOrder = 'reference-first',
): ChatCompletionMessageParam[] {
  const ref = [`Reference answer: ${reference}`];
  if (aliases?.length) ref.push(`Accepted aliases: ${aliases.join('; ')}`);
  const cand = `Candidate answer: ${candidate.replace(/\s+/g, ' ').trim()}`;
  const lines = [`Question: ${question}`, ...(order === 'reference-first' ? [...ref, cand] : [cand, ...ref])];
  return [
    { role: 'system', content: JUDGE_RUBRIC },
    { role: 'user', content: lines.join('\n') },
  ];
}

/** Parses a judge reply: strict JSON first, then the first {...} block for endpoints without structured output. */
export function parseVerdict(text: string): JudgeVerdict | undefined {
  const candidates = [text.trim()];
  const m = text.match(/\{[\s\S]*?\}/g);
  if (m) candidates.push(...m);
  for (const c of candidates) {
    try {
      const parsed = JudgeVerdictSchema.safeParse(JSON.parse(c));
      if (parsed.success) return parsed.data;
    } catch {
      /* not JSON; try the next candidate */
    }
  }
  return undefined;
}

export interface JudgeOutcome {
  verdict?: JudgeVerdict;
  error?: string;
  attempts: number;
}

/**
 * Asks the judge up to `attempts` times for a verdict that fits the schema. Transient and fatal
 * endpoint errors propagate (the activity retries or stops); a judge that keeps answering outside
 * the schema yields no verdict, and the caller marks the item ungradeable.
 */
export async function judge(
  client: ModelClient,
  q: { question: string; answer: string; aliases?: string[] },
  candidate: string,
  opts: { threshold: number; attempts: number; signal?: AbortSignal; order?: JudgeOrder },
): Promise<JudgeOutcome> {
  let structured = true;
  let lastText = '';
  for (let attempt = 1; attempt <= opts.attempts; attempt++) {
    let text: string;
    try {
      [text] = await client.chat(judgeMessages(q.question, q.answer, q.aliases, candidate, opts.order), {
        temperature: 0,
        maxTokens: 200,
        signal: opts.signal,
        responseFormat: structured ? { type: 'json_schema', json_schema: { name: 'grade', schema: verdictJsonSchema, strict: true } } : undefined,
      });
    } catch (err) {
      // Endpoints without structured output refuse response_format: ask again in plain text.
      if (err instanceof ModelCallError && err.kind === 'item' && structured) {
        structured = false;
        attempt--;
        continue;
      }
      throw err;
    }
    lastText = text;
    const verdict = parseVerdict(text);
    if (verdict) return { verdict: { ...verdict, correct: verdict.correct && verdict.score >= opts.threshold }, attempts: attempt };
  }
  return { error: `judge output did not fit the schema after ${opts.attempts} attempts: ${JSON.stringify(lastText.slice(0, 200))}`, attempts: opts.attempts };
}
