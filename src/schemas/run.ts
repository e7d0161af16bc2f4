import type { ConfigInput, Endpoint, Level } from './config';
import type { ArtifactRef } from './artifacts';
import type { TrainRuntime } from './trainer';

/** Task queues: training has its own (a GPU host); adapters are staged where the model server can read them. */
export const TASK_QUEUE = 'slearn';
export const TRAIN_TASK_QUEUE = 'slearn-train';
export const MODEL_TASK_QUEUE = 'slearn-model';
export const ALL_QUEUES = [TASK_QUEUE, TRAIN_TASK_QUEUE, MODEL_TASK_QUEUE] as const;
export type TaskQueue = (typeof ALL_QUEUES)[number];

/** A baseline run trains on another selection of the same answered items (SLearnLLM vs full / random). */
/**
 * A comparison run on the same answers: everything (`full`), a seeded random subset of a given size
 * (`random`), or the config with other settings (`variant`, through the run's overrides). Compared,
 * never promoted.
 */
export type Baseline = { kind: 'full' } | { kind: 'random'; size: number; seed: number } | { kind: 'variant'; label: string };

/**
 * Everything a run needs. The config file is read (and validated again) by the worker, so a
 * scheduled run sees today's config and data; `overrides` is merged over it before validation.
 * No secrets: keys are read inside activities from the variables the config names.
 */
export interface RunInput {
  configFile: string;
  overrides?: ConfigInput | Record<string, unknown>;
  /** Canonical artifact store URL (file:// or s3://), resolved by the client. */
  store: string;
  /** Earlier runs whose completed steps may be reused when their inputs match (`slearn resume`, baselines). */
  reuseFrom?: string[];
  /** How soon a silent activity counts as lost (default 1 minute); tests use seconds. */
  heartbeatTimeout?: string;
  baseline?: Baseline;
}

export interface Counts {
  items: number;
  answered: number;
  graded: number;
  known: number;
  unknown: number;
  ungradeable: number;
}

export type LevelCounts = Record<Level, number>;

/** What every step receives: who it works for and where, never the data itself. */
export interface StepCtx {
  runId: string;
  store: string;
  config: ArtifactRef;
  reuseFrom?: string[];
  /** The config's train.chatTemplate file, read by prepare (where the config is) for the training host. */
  chatTemplate?: ArtifactRef;
}

/** A model as the run uses it: the base, or the base with an adapter loaded under `name`. */
export interface ModelUse {
  label: 'base' | 'current' | 'tuned';
  /** The name to send as `model` (the endpoint's model name, or the adapter's). */
  name: string;
  adapter?: ArtifactRef;
  version?: number;
}

export interface Prepared {
  ctx: StepCtx;
  /** Every item of the dataset, normalised (the held-out split included). */
  dataset: ArtifactRef;
  /** Items answered, graded and possibly trained on (the dataset less the held-out split). */
  trainItems: number;
  evalItems: ArtifactRef;
  shardIndex: ArtifactRef;
  shards: number;
  /** 'file' (the config's eval file) or 'split' (a seeded share of the dataset held out). */
  evalSource: 'file' | 'split';
  /** sha256 of the normalised training items and evaluation items: what "nothing new" compares. */
  dataSha: string;
  notices: string[];
  /** The endpoint under adaptation (no secret: a key is only named), and shard lanes, from the config. */
  endpoint: Endpoint;
  shardConcurrency: number;
}

export interface ShardResult {
  shard: number;
  grades: ArtifactRef;
  counts: Omit<Counts, 'items'>;
  levels: LevelCounts;
}

/** One item the judge and the rule grader disagreed on (its greedy answer). */
export interface Disagreement {
  id: string;
  question: string;
  reference: string;
  answer: string;
  /** The judge's verdict (the rule grader's is the opposite) and its rationale. */
  judge: boolean;
  rationale: string;
}

/**
 * How far the run's judge agrees with the rule grader on the same greedy answers (grader: judge
 * only): the 2×2 table (A the judge, B the rule grader), Cohen's κ with its 95% interval, the
 * sentence to print beside it, and a few examples of each kind of disagreement.
 */
export interface JudgeAgreement {
  items: number;
  table: { bothCorrect: number; onlyA: number; onlyB: number; bothWrong: number };
  observed: number;
  expected: number;
  kappa: number | null;
  low: number | null;
  high: number | null;
  /** describeAgreement's sentence: the figure in words, and a warning when κ is low. */
  words: string;
  examples: { judgeOnly: Disagreement[]; ruleOnly: Disagreement[] };
}

export interface FilterResult {
  trainSet: ArtifactRef;
  /** Replayed items trained on in the second half of training only (`filter.replayWhen: late`). */
  lateSet?: ArtifactRef;
  decisions: ArtifactRef;
  /** The config's fixed retention set (items the model knew, never trained on): asked again after tuning. */
  retention: ArtifactRef;
  kept: number;
  dropped: number;
  ungradeable: number;
  replayed: number;
  levels: LevelCounts;
  /** With `grader: judge`: the judge against the rule grader on the items answered. */
  agreement?: JudgeAgreement;
}

export interface TrainResult {
  skipped: boolean;
  base: string;
  /** A manifest blob listing the adapter's files (each a blob of its own). */
  adapter?: ArtifactRef;
  initAdapter?: ArtifactRef;
  steps: number;
  resumedFromStep: number;
  trainSeconds: number;
  losses?: ArtifactRef;
  runtime?: TrainRuntime;
}

export interface Accuracy {
  correct: number;
  total: number;
  ungradeable: number;
  accuracy: number;
  low: number;
  high: number;
}

export interface PassResult {
  model: ModelUse;
  set: 'eval' | 'retention';
  grades: ArtifactRef;
  accuracy: Accuracy;
}

/** Paired comparison of two passes over the same items. */
export interface Paired {
  a: string;
  b: string;
  /** Items b got right and a wrong, and the reverse. */
  fixed: number;
  broken: number;
  /** Exact McNemar test (two-sided binomial on the discordant pairs). */
  pValue: number;
}

export interface EvalResult {
  items: number;
  base: Accuracy;
  current?: Accuracy;
  tuned?: Accuracy;
  tunedModel?: string;
  /** Tuned against the model it must beat: the current one, or the base when there is none. */
  vsReference?: Paired;
  retention?: Accuracy;
  passes: PassResult[];
  results: ArtifactRef;
}

export interface PromotionDecision {
  promoted: boolean;
  reason: string;
  version?: number;
  gain?: number;
  forgetting?: number;
}

export interface ReportResult {
  markdown: ArtifactRef;
  html: ArtifactRef;
}

export type Stage = 'prepare' | 'answer-grade' | 'filter' | 'train' | 'evaluate' | 'promote' | 'report' | 'done';

export interface Progress {
  runId: string;
  stage: Stage;
  shardsDone: number;
  shardsTotal: number;
  counts: Counts;
  levels?: LevelCounts;
  continuedAsNew: number;
  startedAt: number;
  current?: { version: number; name: string };
}

/** The state a run carries across continue-as-new: counts and references only. */
export interface RunState {
  progress: Progress;
  prepared?: Prepared;
  nextShard: number;
  current?: ModelUse | null;
  filter?: FilterResult;
  train?: TrainResult;
  evaluation?: EvalResult;
  /** Each shard's grades, in shard order (references only). */
  grades?: ArtifactRef[];
}

export interface RunResult {
  runId: string;
  /** The artifact store the run wrote to (reports, lineage, registry). */
  store: string;
  status: 'completed' | 'nothing-new';
  counts: Counts;
  levels?: LevelCounts;
  filter?: FilterResult;
  train?: TrainResult;
  evaluation?: EvalResult;
  promotion?: PromotionDecision;
  report?: ReportResult;
  continuedAsNew: number;
  reason?: string;
}
