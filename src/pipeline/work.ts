import { randomBytes } from 'node:crypto';
import { StoreNotShared, type FailureKind } from '../errors';
import { AdaptiveConcurrency } from '../model/concurrency';
import type { WorkProgress } from '../schemas/progress';
import { numbered } from '../store/backend';
import type { Store } from '../store/store';

export type { WorkProgress };

/**
 * A failed item as the runner sees it: what to do about it (`kind`, see errors.ts), how long the
 * other side asked to wait, and whether it means "too much at once". The caller's `classify` says;
 * the runner knows nothing of what the work is.
 */
export interface ItemFailure extends Error {
  kind: FailureKind;
  retryAfterSeconds?: number;
  overload?: boolean;
}

const KINDS: readonly unknown[] = ['transient', 'item', 'fatal'] satisfies FailureKind[];

/** A failure that says its kind keeps it; any other is transient: asked again, given up on only on the last attempt. */
export function asItemFailure(e: unknown): ItemFailure {
  if (e instanceof Error && KINDS.includes((e as Partial<ItemFailure>).kind)) return e as ItemFailure;
  return Object.assign(new Error(`the request failed: ${(e as Error)?.message ?? String(e)}`), { kind: 'transient' as const });
}

export interface RunItemsOptions<I, O> {
  store: Store;
  /** Key prefix of this work's flushed parts, e.g. runs/<run>/work/answer-000003-<fp>. */
  dir: string;
  phase: string;
  items: I[];
  id: (x: I | O) => string;
  /** Most items at risk at once (in flight + finished but not yet written): what a crash can cost. */
  window: number;
  concurrency: number;
  work: (item: I, signal: AbortSignal) => Promise<O>;
  /** The record of an item given up on (counted as ungradeable, never as wrong). */
  fail: (item: I, error: string) => O;
  /** Sorts a failure of `work` (default: `asItemFailure`). */
  classify?: (e: unknown) => ItemFailure;
  /** Last attempt of the activity: an item whose request keeps failing becomes a `fail` record. */
  giveUp: boolean;
  signal: AbortSignal;
  /** Tries per item inside this attempt before a transient failure fails the attempt. */
  maxTries?: number;
  /** Most time between two writes of finished items. */
  flushMs?: number;
  previous?: WorkProgress;
  onProgress?: (p: WorkProgress) => void;
  /** Waits between retries and idle turns (tests shorten it); a timer by default. */
  sleep?: (ms: number) => Promise<void>;
}

/** Every item flushed to `dir` by earlier attempts, by id (the first record of an item wins). */
export async function readParts<O>(store: Store, dir: string, id: (o: O) => string): Promise<Map<string, O>> {
  const done = new Map<string, O>();
  for (const key of await store.listDocs(dir)) {
    const text = await store.readText(key);
    if (text === undefined) continue;
    for (const line of text.split('\n')) {
      if (!line) continue;
      let o: O;
      try {
        o = JSON.parse(line) as O;
      } catch {
        break; // a part cut short by a power cut (parts are not fsynced): its items are asked again
      }
      if (!done.has(id(o))) done.set(id(o), o);
    }
  }
  return done;
}

/**
 * Works through `items` with a sliding window of requests (a slow one never holds the others
 * back), writing finished items to the store in small parts as it goes. A retried attempt reads
 * the parts and does only the rest, so a crash costs at most `window` items. A transient failure
 * is asked again in place (after Retry-After or a backoff) and lowers the concurrency when it
 * means overload; it never discards finished neighbours: they are written before the attempt fails.
 * Returns the results in item order.
 */
export async function runItems<I, O>(opts: RunItemsOptions<I, O>): Promise<O[]> {
  const done = await readParts<O>(opts.store, opts.dir, opts.id);
  const resumed = opts.items.filter((i) => done.has(opts.id(i))).length;
  if (opts.previous && opts.previous.phase === opts.phase && opts.previous.flushed > resumed) {
    throw new StoreNotShared(
      `the previous attempt flushed ${opts.previous.flushed} items of ${opts.phase} but the store has ${resumed}: do all workers use the same artifact store?`,
    );
  }
  return new SlidingWindow(opts, done, resumed).run();
}

interface Retry<I> {
  item: I;
  tries: number;
  notBefore: number;
  /** When this item first failed in this attempt: it is given up on only if the endpoint answered others since. */
  failingSince: number;
}

/** The state of one `runItems` call: what is in flight, finished but unwritten, being written, and to be asked again. */
class SlidingWindow<I, O> {
  private readonly maxTries: number;
  private readonly flushMs: number;
  private readonly window: number;
  private readonly limiter: AdaptiveConcurrency;
  private readonly classify: (e: unknown) => ItemFailure;
  /** Names this attempt's parts, so two attempts never write the same key. */
  private readonly tag = randomBytes(5).toString('hex');
  private readonly startedAt = Date.now();
  private readonly todo: I[];
  private readonly retryQueue: Retry<I>[] = [];
  private next = 0;
  private inflight = 0;
  private unflushed: O[] = [];
  private flushing: Promise<void> | undefined;
  private flushingCount = 0;
  private lastFlush = Date.now();
  /** When the endpoint last answered: an item is given up on only while others are answered. */
  private lastSuccess = 0;
  private failed = 0;
  private retries = 0;
  private seq = 0;
  private fatal: Error | undefined;
  private transient: ItemFailure | undefined;
  private wake: () => void = () => undefined;
  private changed = new Promise<void>((r) => (this.wake = r));

  constructor(
    private readonly opts: RunItemsOptions<I, O>,
    private readonly done: Map<string, O>,
    private readonly resumed: number,
  ) {
    this.maxTries = opts.maxTries ?? 5;
    this.flushMs = opts.flushMs ?? 2000;
    this.window = Math.max(1, opts.window);
    this.limiter = new AdaptiveConcurrency(Math.max(1, Math.min(opts.concurrency, this.window)));
    this.classify = opts.classify ?? asItemFailure;
    this.todo = opts.items.filter((i) => !done.has(opts.id(i)));
  }

  /** Something changed (a request or a write ended, the signal fired): the loop looks again. */
  private readonly poke = () => {
    this.wake();
    this.changed = new Promise<void>((r) => (this.wake = r));
  };

  async run(): Promise<O[]> {
    const { signal } = this.opts;
    signal.addEventListener('abort', this.poke, { once: true });
    try {
      await this.pump();
      await this.drain();
    } finally {
      signal.removeEventListener('abort', this.poke);
      this.opts.onProgress?.(this.progress());
    }
    if (this.fatal !== undefined) throw this.fatal;
    if (this.transient) throw this.transient;
    signal.throwIfAborted();
    return this.opts.items.map((i) => this.done.get(this.opts.id(i))!);
  }

  private progress(): WorkProgress {
    return {
      phase: this.opts.phase,
      done: this.done.size + this.unflushed.length + this.flushingCount,
      flushed: this.done.size,
      total: this.opts.items.length,
      resumed: this.resumed,
      failed: this.failed,
      retries: this.retries,
      concurrency: this.limiter.limit,
      startedAt: this.startedAt,
    };
  }

  /** Starts requests while the window and the limiter allow, flushes when due, and waits for the next change. */
  private async pump(): Promise<void> {
    for (;;) {
      if (this.fatal !== undefined || this.opts.signal.aborted) return;
      const now = Date.now();
      const risk = this.inflight + this.unflushed.length + this.flushingCount;
      const drained = this.next >= this.todo.length && !this.retryQueue.length && this.inflight === 0;
      if (this.unflushed.length && (this.unflushed.length * 2 >= this.window || drained || now - this.lastFlush >= this.flushMs)) void this.flush(); // its failure lands in `fatal`
      if (drained && !this.flushing && !this.unflushed.length) return;
      const due = this.retryQueue.findIndex((r) => r.notBefore <= now);
      const canStart = risk < this.window && this.inflight < this.limiter.limit && this.limiter.waitMs() === 0;
      if (canStart && due >= 0) {
        const [r] = this.retryQueue.splice(due, 1);
        this.start(r.item, r.tries, r.failingSince);
        continue;
      }
      if (canStart && this.next < this.todo.length) {
        this.start(this.todo[this.next++], 0);
        continue;
      }
      await this.idle(now);
    }
  }

  /**
   * Waits for the next change. A finished request wakes the loop; a timer is needed only for what no
   * request will bring: a time-based flush, a retry that is not due yet, a pause after Retry-After.
   */
  private async idle(now: number): Promise<void> {
    const reasons = [
      ...(this.unflushed.length ? [this.flushMs - (now - this.lastFlush)] : []),
      ...(this.limiter.waitMs() ? [this.limiter.waitMs()] : []),
      ...this.retryQueue.map((r) => r.notBefore - now),
    ];
    if (!reasons.length && this.inflight === 0 && !this.flushing) reasons.push(this.flushMs);
    if (!reasons.length) return this.changed;
    const soonest = Math.max(1, Math.min(...reasons));
    let timer: NodeJS.Timeout | undefined;
    const wait = this.opts.sleep ? this.opts.sleep(soonest) : new Promise<void>((r) => (timer = setTimeout(r, soonest)));
    await Promise.race([this.changed, wait]);
    clearTimeout(timer);
  }

  /**
   * Whatever happened, what finished is written before the attempt ends (a cancelled or superseded
   * attempt only lets a write already under way finish: it starts none).
   */
  private async drain(): Promise<void> {
    while (this.inflight > 0 || this.flushing) await this.changed;
    if (!this.opts.signal.aborted) await this.flush();
  }

  /** Writes the finished items as one part (one write at a time); a failed write becomes the attempt's failure. */
  private flush(): Promise<void> | undefined {
    if (this.flushing || !this.unflushed.length) return this.flushing;
    const batch = this.unflushed;
    const { store, dir, id, signal } = this.opts;
    this.unflushed = [];
    this.flushingCount = batch.length;
    this.flushing = (async () => {
      // A cancelled or superseded attempt writes nothing more.
      signal.throwIfAborted();
      await store.writePart(`${dir}/part-${this.tag}-${numbered(this.seq++)}.jsonl`, batch.map((o) => JSON.stringify(o)).join('\n') + '\n');
      for (const o of batch) if (!this.done.has(id(o))) this.done.set(id(o), o);
    })()
      .catch((e: Error) => {
        this.fatal ??= e;
      })
      .finally(() => {
        this.flushing = undefined;
        this.flushingCount = 0;
        this.lastFlush = Date.now();
        this.opts.onProgress?.(this.progress());
        this.poke();
      });
    return this.flushing;
  }

  private start(item: I, tries: number, failingSince?: number): void {
    this.inflight++;
    this.opts
      .work(item, this.opts.signal)
      .then(
        (o) => {
          this.lastSuccess = Date.now();
          this.limiter.onSuccess();
          this.unflushed.push(o);
        },
        (e) => {
          if (!this.opts.signal.aborted) this.failedOnce(item, tries, failingSince ?? Date.now(), this.classify(e));
        },
      )
      .finally(() => {
        this.inflight--;
        this.poke();
      });
  }

  /** A failed request: stop (fatal), record the item (item), or ask again later, until the tries run out (transient). */
  private failedOnce(item: I, tries: number, since: number, err: ItemFailure): void {
    if (err.kind === 'fatal') {
      this.fatal ??= err;
      return;
    }
    if (err.kind === 'item') return this.giveUpOn(item, err);
    if (err.overload) this.limiter.onOverload((err.retryAfterSeconds ?? 0) * 1000);
    if (tries + 1 < this.maxTries) {
      this.retries++;
      // Seen by `slearn status` at once, not only at the next write.
      this.opts.onProgress?.({ ...this.progress(), lastError: err.message });
      const backoff = Math.min(30_000, 500 * 2 ** tries) * (0.75 + Math.random() / 2);
      this.retryQueue.push({ item, tries: tries + 1, notBefore: Date.now() + Math.max(backoff, (err.retryAfterSeconds ?? 0) * 1000), failingSince: since });
    } else if (this.opts.giveUp && this.lastSuccess > since) {
      // The endpoint answers other items while this one keeps failing: the item is the problem. An
      // endpoint that answers nobody fails the attempt instead, so a dead endpoint fails the run
      // rather than turning every item ungradeable.
      this.giveUpOn(item, err);
    } else this.transient ??= err;
  }

  private giveUpOn(item: I, err: ItemFailure): void {
    this.failed++;
    this.unflushed.push(this.opts.fail(item, err.message));
  }
}
