/**
 * Adaptive concurrency (additive increase, multiplicative decrease, as TCP does): an overloaded
 * endpoint (429, 503, timeouts) halves the requests in flight and may pause them until its
 * Retry-After; every `limit` successes in a row raise the limit by one, up to the configured
 * maximum. So a busy endpoint slows the run down instead of failing its attempts.
 */
export class AdaptiveConcurrency {
  limit: number;
  pausedUntil = 0;
  private successes = 0;
  private lastDecrease = -Infinity;

  constructor(
    readonly max: number,
    readonly min = 1,
    private readonly now: () => number = Date.now,
  ) {
    this.limit = max;
  }

  onSuccess(): void {
    if (++this.successes >= this.limit && this.limit < this.max) {
      this.limit++;
      this.successes = 0;
    }
  }

  /** One decrease per second at most: a burst of failures from one overload episode counts once. */
  onOverload(retryAfterMs = 0): void {
    const t = this.now();
    if (retryAfterMs > 0) this.pausedUntil = Math.max(this.pausedUntil, t + retryAfterMs);
    this.successes = 0;
    if (t - this.lastDecrease < 1000) return;
    this.lastDecrease = t;
    this.limit = Math.max(this.min, Math.floor(this.limit / 2));
  }

  /** How long to wait before starting another request (0: go). */
  waitMs(): number {
    return Math.max(0, this.pausedUntil - this.now());
  }
}
