import type { StepRecord } from '../schemas/artifacts';
import type { Store } from '../store/store';
import type { WorkerPolicy } from './policy';

/** Structured log lines: Temporal's activity logger in a worker, anything with the same shape elsewhere. */
export interface StepLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/**
 * What a pipeline step gets from whoever runs it: an activity (heartbeats, cancellation, attempt
 * numbers from Temporal) or a test calling the step directly. Steps know nothing about Temporal.
 */
export interface StepEnv {
  /** Opens the run's artifact store (after the policy allowed it). */
  store(url: string): Promise<Store>;
  /** Aborted when the step is cancelled or its attempt was superseded: stop, and write nothing more. */
  signal: AbortSignal;
  attempt: number;
  /** From this attempt on, items whose requests keep failing are reported as ungradeable. */
  giveUp: boolean;
  /** The latest progress: sent as heartbeat details (read by `slearn status` without history events). */
  progress(details: unknown): void;
  /** The previous attempt's last progress, to check a resume against the store. */
  previous?: unknown;
  policy: WorkerPolicy;
  /** Where keys are read from: the worker's environment. */
  env: NodeJS.ProcessEnv;
  /** Local scratch directory of this host (training data, checkpoints). */
  scratch: string;
  /** argv prefix of a trainer implementing the contract. */
  trainer: string[];
  /** Where adapters are staged on this host for the model server to read (its --adapter-root). */
  adapterDir: string;
  /** How long a lease lives without renewal (training across hosts). */
  leaseTtlMs: number;
  /** Who is running this step, for leases and logs. */
  label: string;
  /** Where the step says what it does (its runner adds the step, the run and the attempt to every line). */
  log: StepLog;
  /** Called when the step's output was already in the store (this run's, or a run it reuses): nothing was redone. */
  reused?(record: StepRecord): void;
}
