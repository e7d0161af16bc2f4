/**
 * Live progress of a running activity. It travels as the activity's heartbeat details, which
 * Temporal keeps on the pending activity (read with `describe()`) and never writes to history: a
 * 48-hour training adds the same few events as a 1-minute one.
 */
export interface WorkProgress {
  /** Which pass of which step ("answer-grade shard 3", "eval tuned"). */
  phase: string;
  /** Items finished (flushed or about to be). */
  done: number;
  /** Items finished and written to the store: what a retry will not redo. */
  flushed: number;
  total: number;
  /** Items found flushed when this attempt started. */
  resumed: number;
  /** Items reported as failed (ungradeable). */
  failed: number;
  /** Requests asked again inside this attempt. */
  retries: number;
  /** Requests allowed in flight right now (lowered while the endpoint is overloaded). */
  concurrency: number;
  startedAt: number;
  /** Answer-grade shards: items graded in this attempt whose greedy answer was right, and wrong (the live known/unknown of the progress line). */
  known?: number;
  unknown?: number;
  /** The last failure asked again inside this attempt (an endpoint that keeps refusing shows here). */
  lastError?: string;
}

export interface TrainProgressDetails {
  phase: 'train';
  step: number;
  totalSteps: number;
  loss?: number;
  resumedFromStep?: number;
  /** Measured over this attempt, for the ETA. */
  stepsPerSecond?: number;
  checkpointStep?: number;
  /** The newest checkpoint in the store: where a retry on any host resumes. */
  uploadedStep?: number;
  device?: 'cuda' | 'cpu';
  precision?: 'bf16' | 'fp16' | 'fp32';
  /** Training processes (one per GPU under torchrun). */
  processes?: number;
  host: string;
  startedAt: number;
}

export type ActivityProgress = WorkProgress | TrainProgressDetails;

export function isTrainProgress(p: unknown): p is TrainProgressDetails {
  return typeof p === 'object' && p !== null && (p as { phase?: unknown }).phase === 'train';
}

export function isWorkProgress(p: unknown): p is WorkProgress {
  return typeof p === 'object' && p !== null && typeof (p as WorkProgress).done === 'number' && typeof (p as WorkProgress).total === 'number';
}
