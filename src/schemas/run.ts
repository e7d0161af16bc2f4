import type { Config } from './config';
import type { ArtifactRef } from './artifacts';

/** Task queues: training gets its own so it can live on a GPU host. */
export const TASK_QUEUE = 'slearn';
export const TRAIN_TASK_QUEUE = 'slearn-train';

/** Everything a run needs, with paths already absolute. No secrets: keys are read inside activities. */
export interface RunInput {
  config: Config;
  configFile: string;
  artifactRoot: string;
  /** Earlier runs whose completed steps may be reused when their inputs match (`slearn resume`). */
  reuseFrom?: string[];
  /** How soon a silent activity counts as lost (default 1 minute); tests use seconds. */
  heartbeatTimeout?: string;
}

export interface Counts {
  items: number;
  answered: number;
  graded: number;
  known: number;
  unknown: number;
  ungradeable: number;
}

/** What every step receives: who it works for and where, never the data itself. */
export interface StepCtx {
  runId: string;
  root: string;
  config: ArtifactRef;
  reuseFrom?: string[];
}

export interface PreparedRef {
  ctx: StepCtx;
  shardIndex: ArtifactRef;
  items: ArtifactRef;
  evalItems: ArtifactRef;
  shards: number;
  evalIsDataset: boolean;
}

export interface ShardResult {
  shard: number;
  answers: ArtifactRef;
  grades?: ArtifactRef;
  counts: Omit<Counts, 'items'>;
}

export interface FilterResult {
  trainSet: ArtifactRef;
  decisions: ArtifactRef;
  kept: number;
  dropped: number;
  ungradeable: number;
  replayed: number;
}

export interface TrainResult {
  skipped: boolean;
  base: string;
  adapter?: { path: string; ref: ArtifactRef };
  steps: number;
  resumedFromStep: number;
  trainSeconds: number;
  losses?: ArtifactRef;
}

export interface Accuracy {
  correct: number;
  total: number;
  ungradeable: number;
  accuracy: number;
  low: number;
  high: number;
}

export interface EvalResult {
  items: number;
  base: Accuracy;
  tuned?: Accuracy;
  tunedModel?: string;
  /** Items the tuned model got right and the base wrong, and the reverse. */
  fixed: number;
  broken: number;
  results: ArtifactRef;
}

export interface ReportResult {
  markdown: ArtifactRef;
  html: ArtifactRef;
  dir: string;
}

export type Stage = 'prepare' | 'answer-grade' | 'filter' | 'train' | 'evaluate' | 'done' | 'failed' | 'cancelled';

export interface TrainProgress {
  step: number;
  totalSteps: number;
  loss?: number;
  checkpoint?: string;
  resumedFromStep?: number;
  /** Measured over this attempt, for the ETA. */
  stepsPerSecond?: number;
}

export interface Progress {
  runId: string;
  stage: Stage;
  shardsDone: number;
  shardsTotal: number;
  counts: Counts;
  train?: TrainProgress;
  continuedAsNew: number;
  startedAt: number;
}

/** The state a run carries across continue-as-new: counts and references only. */
export interface RunState {
  progress: Progress;
  prepared?: PreparedRef;
  nextShard: number;
}

export interface RunResult {
  runId: string;
  counts: Counts;
  filter: FilterResult;
  train: TrainResult;
  evaluation: EvalResult;
  report: ReportResult;
  continuedAsNew: number;
}
