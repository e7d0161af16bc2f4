/**
 * Every way a step can fail, defined once, with what a retry does about it.
 *
 * A pipeline step throws one of the classes below; the activity layer turns it into a Temporal
 * `ApplicationFailure` whose `type` is the class's `type` (`toFailure` in activities/index.ts), and the
 * workflow's retry policies name the types that are never retried (`NON_RETRYABLE`). Both sides
 * read the same table, so a new failure is added here and nowhere else. This module imports no
 * Node built-in: the workflow bundle imports it.
 */
import { formatProblem, type Problem } from './problems';

/** The failure types a step can end with, as Temporal records them (`ApplicationFailure.type`). */
export const FailureType = {
  InvalidInput: 'InvalidInput',
  PolicyError: 'PolicyError',
  RunIdReused: 'RunIdReused',
  StoreNotShared: 'StoreNotShared',
  ModelConfigError: 'ModelConfigError',
  TrainerError: 'TrainerError',
  AdapterNotLoaded: 'AdapterNotLoaded',
  TrainerBusy: 'TrainerBusy',
  ModelUnavailable: 'ModelUnavailable',
  LeaseLost: 'LeaseLost',
  CorruptArtifact: 'CorruptArtifactError',
} as const;
export type FailureType = (typeof FailureType)[keyof typeof FailureType];

/**
 * What a retry does about each type:
 * - `never`:    the input, the config or the worker's policy is wrong; retrying cannot help, the run
 *               stops with a message that says what to fix.
 * - `workflow`: not retried by Temporal; the workflow repairs the cause (stages the adapter again)
 *               and repeats the step itself.
 * - `after`:    retried once the delay the failure names has passed (another attempt holds the
 *               training lease; the endpoint's Retry-After).
 * - `backoff`:  retried with the step's exponential backoff (a lost lease, a damaged download, any
 *               unexpected error).
 */
export const RETRY: Record<FailureType, 'never' | 'workflow' | 'after' | 'backoff'> = {
  InvalidInput: 'never',
  PolicyError: 'never',
  RunIdReused: 'never',
  StoreNotShared: 'never',
  ModelConfigError: 'never',
  TrainerError: 'never',
  AdapterNotLoaded: 'workflow',
  TrainerBusy: 'after',
  ModelUnavailable: 'after',
  LeaseLost: 'backoff',
  CorruptArtifactError: 'backoff',
};

/** The types the workflow's retry policies never retry (in the order recorded histories hold them). */
export const NON_RETRYABLE: FailureType[] = (Object.keys(RETRY) as FailureType[]).filter((t) => RETRY[t] === 'never');

/** The root of slearn's failures: a message that says what to fix, and the type Temporal records. */
export abstract class SlearnError extends Error {
  abstract readonly type: FailureType;

  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }

  /** How long to wait before the next attempt, when the failure knows (seconds). */
  get retryDelaySeconds(): number | undefined {
    return undefined;
  }

  /** Not retried by Temporal: a retry would fail the same way, or the workflow repairs the cause itself. */
  get nonRetryable(): boolean {
    return RETRY[this.type] === 'never' || RETRY[this.type] === 'workflow';
  }
}

/** The user's input (config, dataset, arguments) can never succeed: every problem, located, at once. */
export class InvalidInput extends SlearnError {
  readonly type = FailureType.InvalidInput;
  readonly problems: Problem[];

  /** From located problems (`FILE:LINE: field: message` each, under `heading` when given), or a plain message. */
  constructor(problems: Problem[] | string, heading?: string) {
    const list = typeof problems === 'string' ? [] : problems;
    super(typeof problems === 'string' ? problems : [...(heading ? [heading] : []), ...list.map(formatProblem)].join('\n'));
    this.problems = list;
  }
}

/** The worker's policy refuses what the workflow's input asks (an endpoint, a key variable, a path, a store). */
export class PolicyError extends SlearnError {
  readonly type = FailureType.PolicyError;
}

/** A run id is reused for different input: old partial work must never mix into a new run. */
export class RunIdReused extends SlearnError {
  readonly type = FailureType.RunIdReused;
}

/** The heartbeat of the previous attempt says more was flushed than the store holds: workers do not share one store. */
export class StoreNotShared extends SlearnError {
  readonly type = FailureType.StoreNotShared;
}

/** The trainer said the input can never work (bad data, bad arguments, no CUDA): not retried. */
export class TrainerError extends SlearnError {
  readonly type = FailureType.TrainerError;
}

/** Another attempt holds this run's training: try again after `retryAfterMs`. */
export class TrainerBusy extends SlearnError {
  readonly type = FailureType.TrainerBusy;
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }

  override get retryDelaySeconds(): number {
    return this.retryAfterMs / 1000;
  }
}

/** A lease holder found a newer generation (someone took over): it must stop. */
export class LeaseLost extends SlearnError {
  readonly type = FailureType.LeaseLost;
}

/** Stored bytes do not match their reference: never retried into success silently (the next attempt reads again). */
export class CorruptArtifactError extends SlearnError {
  readonly type = FailureType.CorruptArtifact;
}

/**
 * How a failed model call is handled:
 *  - transient: rate limits, 5xx, timeouts, broken bodies; asked again later (Retry-After honoured)
 *  - item:      the endpoint refused this one request (400/413/422); the item is reported, the run goes on
 *  - fatal:     the configuration is wrong (401/403/404); stop at once and say what to fix
 */
export type FailureKind = 'transient' | 'item' | 'fatal';

/** An HTTP status as a kind of failure: the one mapping every model call goes through. */
export function kindOfStatus(status: number): FailureKind {
  if (status === 429 || status === 408 || status === 409 || status >= 500) return 'transient';
  if (status === 401 || status === 403 || status === 404) return 'fatal';
  return 'item';
}

/** Statuses that mean "too much at once": they lower the concurrency instead of only being retried. */
export const isOverload = (status: number | undefined) => status === 429 || status === 503 || status === 408;

/** A model call that failed, sorted by what to do about it (`kind`). */
export class ModelCallError extends SlearnError {
  constructor(
    message: string,
    readonly kind: FailureKind,
    readonly status?: number,
    /** The endpoint's Retry-After, in seconds. */
    readonly retryAfterSeconds?: number,
    /** A transient failure that means "too much at once" (429, 503, timeouts). */
    readonly overload = false,
  ) {
    super(message);
  }

  override get retryDelaySeconds(): number | undefined {
    return this.retryAfterSeconds || undefined;
  }

  /** A wrong configuration stops the run; anything else is the endpoint being unavailable for now. */
  get type(): FailureType {
    return this.kind === 'fatal' ? FailureType.ModelConfigError : FailureType.ModelUnavailable;
  }

  /**
   * The error for an HTTP status (as openai-node's `APIError.generate` does for its classes). `hint`
   * says what to check for a status that means the configuration is wrong. An admin call (loading
   * an adapter) has no item to give up on: what is not transient there is fatal.
   */
  static fromStatus(
    status: number,
    message: string,
    opts: { retryAfterSeconds?: number; hints?: Partial<Record<number, string>>; admin?: boolean } = {},
  ): ModelCallError {
    let kind = kindOfStatus(status);
    if (opts.admin && kind === 'item') kind = 'fatal';
    const hint = opts.hints?.[status];
    return new ModelCallError(
      hint ? `${message} (${hint})` : message,
      kind,
      status,
      kind === 'transient' ? opts.retryAfterSeconds : undefined,
      kind === 'transient' && isOverload(status),
    );
  }

  /** The same error with `secret` blanked out of its message. */
  redacted(secret: string): ModelCallError {
    return new ModelCallError(this.message.split(secret).join('[redacted]'), this.kind, this.status, this.retryAfterSeconds, this.overload);
  }
}

/** The endpoint does not have the adapter (a model server that restarted loses them): the workflow stages it again. */
export class AdapterNotLoaded extends ModelCallError {
  constructor(name: string) {
    super(`adapter ${name} is not loaded on the endpoint`, 'fatal', 404);
  }

  override get type(): FailureType {
    return FailureType.AdapterNotLoaded;
  }
}

/**
 * A training worker that must train on GPUs (SLEARN_REQUIRE_GPU=1) and cannot: the reason, from the
 * trainer. Not a step failure: the worker refuses to start, before any workflow sees it.
 */
export class NoGpu extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoGpu';
  }
}
