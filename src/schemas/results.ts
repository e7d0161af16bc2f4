import type { Level } from './config';
import type { ModelUse } from './run';

/**
 * What the steps write to the store row by row (JSON Lines), and what the report, the CLI and the
 * comparisons read back: types only, below every layer that writes or reads them.
 */

export interface SampleGrade {
  answer: string;
  correct: boolean;
  score: number;
  rationale: string;
  /** With `grader: judge`: the rule grader's verdict on the same answer (aliases included), to measure the judge against. */
  rule?: boolean;
}

/** One item answered and graded: the greedy answer, the sampled ones, and the knowledge level they give. */
export interface ItemGrade {
  id: string;
  status: 'graded' | 'ungradeable';
  greedy?: SampleGrade;
  samples: SampleGrade[];
  level?: Level;
  /** The model's answer when it could not be graded (a judge that never fit its schema). */
  answer?: string;
  error?: string;
}

export type Decision = 'kept' | 'dropped' | 'replayed' | 'ungradeable';

/** The filter's decision for one item, with its reason (the decisions file of a run). */
export interface DecisionRecord {
  id: string;
  question: string;
  reference: string;
  meta?: Record<string, unknown>;
  level?: Level;
  /** The greedy answer first, then the sampled ones. */
  answers: string[];
  grades: { correct: boolean; score: number; rationale: string; rule?: boolean }[];
  decision: Decision;
  why: string;
}

export type Delta = 'fixed' | 'broken' | 'both-right' | 'both-wrong' | 'ungradeable' | 'base-only';

/** One held-out item with every model's answer (the evaluation results of a run). */
export interface EvalItemResult {
  id: string;
  question: string;
  reference: string;
  meta?: Record<string, unknown>;
  answers: Partial<Record<ModelUse['label'], { answer: string; correct: boolean; status: ItemGrade['status']; rationale?: string }>>;
  /** Tuned against the reference model (current, else base). */
  delta: Delta;
}
