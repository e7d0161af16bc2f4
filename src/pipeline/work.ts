import { randomBytes } from 'node:crypto';
import { AdaptiveConcurrency } from '../model/concurrency';
import { ModelCallError, StoreNotShared } from '../errors';
import { classifyError } from '../model/client';
import type { WorkProgress } from '../schemas/progress';
import type { Store } from '../store/store';

export type { WorkProgress };

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

export async function readParts<O>(store: Store, dir: string, id: (o: O) => string): Promise<Map<string, O>> {
  const done = new Map<string, O>();
  for (const key of await store.listDocs(dir)) {
    const src = await store.backend.get(key);
    if (!src) continue;
    const parts: Buffer[] = [];
    for await (const c of src) parts.push(c as Buffer);
    for (const line of Buffer.concat(parts).toString('utf8').split('\n')) {
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
  const { store, dir, items, id, signal } = opts;
  const maxTries = opts.maxTries ?? 5;
  const flushMs = opts.flushMs ?? 2000;
  const window = Math.max(1, opts.window);
  const limiter = new AdaptiveConcurrency(Math.max(1, Math.min(opts.concurrency, window)));
  const tag = randomBytes(5).toString('hex');

  const done = await readParts<O>(store, dir, id);
  const resumed = items.filter((i) => done.has(id(i))).length;
  if (opts.previous && opts.previous.phase === opts.phase && opts.previous.flushed > resumed) {
    throw new StoreNotShared(
      `the previous attempt flushed ${opts.previous.flushed} items of ${opts.phase} but the store has ${resumed}: do all workers use the same artifact store?`,
    );
  }
  const todo = items.filter((i) => !done.has(id(i)));
  const retryQueue: { item: I; tries: number; notBefore: number; failingSince: number }[] = [];
  // When the endpoint last answered: an item is given up on only while others are answered.
  let lastSuccess = 0;
  let next = 0;
  let inflight = 0;
  let unflushed: O[] = [];
  let flushing: Promise<void> | undefined;
  let flushingCount = 0;
  let lastFlush = Date.now();
  let failed = 0;
  let retries = 0;
  let seq = 0;
  let fatal: Error | undefined;
  let transient: ModelCallError | undefined;
  let wake: () => void = () => undefined;
  let changed = new Promise<void>((r) => (wake = r));
  const poke = () => {
    wake();
    changed = new Promise<void>((r) => (wake = r));
  };
  const startedAt = Date.now();
  const progress = (): WorkProgress => ({
    phase: opts.phase,
    done: done.size + unflushed.length + flushingCount,
    flushed: done.size,
    total: items.length,
    resumed,
    failed,
    retries,
    concurrency: limiter.limit,
    startedAt,
  });

  const flush = (): Promise<void> | undefined => {
    if (flushing || !unflushed.length) return flushing;
    const batch = unflushed;
    unflushed = [];
    flushingCount = batch.length;
    flushing = (async () => {
      // A cancelled or superseded attempt writes nothing more.
      signal.throwIfAborted();
      const body = Buffer.from(batch.map((o) => JSON.stringify(o)).join('\n') + '\n');
      await store.backend.put(`${dir}/part-${tag}-${String(seq++).padStart(6, '0')}.jsonl`, body, { ifAbsent: true, durable: false });
      for (const o of batch) if (!done.has(id(o))) done.set(id(o), o);
    })()
      .catch((e: Error) => {
        fatal ??= e;
      })
      .finally(() => {
        flushing = undefined;
        flushingCount = 0;
        lastFlush = Date.now();
        opts.onProgress?.(progress());
        poke();
      });
    return flushing;
  };

  const start = (item: I, tries: number, failingSince?: number) => {
    inflight++;
    opts
      .work(item, signal)
      .then(
        (o) => {
          lastSuccess = Date.now();
          limiter.onSuccess();
          unflushed.push(o);
        },
        (e) => {
          if (signal.aborted) return;
          const err = classifyError(e, { baseUrl: 'the endpoint', name: '' });
          if (err.kind === 'fatal') fatal ??= err;
          else if (err.kind === 'item') {
            failed++;
            unflushed.push(opts.fail(item, err.message));
          } else {
            if (err.overload) limiter.onOverload((err.retryAfterSeconds ?? 0) * 1000);
            const since = failingSince ?? Date.now();
            if (tries + 1 < maxTries) {
              retries++;
              // Seen by `slearn status` at once, not only at the next write.
              opts.onProgress?.({ ...progress(), lastError: err.message });
              const backoff = Math.min(30_000, 500 * 2 ** tries) * (0.75 + Math.random() / 2);
              retryQueue.push({
                item,
                tries: tries + 1,
                notBefore: Date.now() + Math.max(backoff, (err.retryAfterSeconds ?? 0) * 1000),
                failingSince: since,
              });
            } else if (opts.giveUp && lastSuccess > since) {
              // The endpoint answers other items while this one keeps failing: the item is the
              // problem. An endpoint that answers nobody fails the attempt instead, so a dead
              // endpoint fails the run rather than turning every item ungradeable.
              failed++;
              unflushed.push(opts.fail(item, err.message));
            } else transient ??= err;
          }
        },
      )
      .finally(() => {
        inflight--;
        poke();
      });
  };

  signal.addEventListener('abort', poke, { once: true });
  try {
    for (;;) {
      if (fatal !== undefined || signal.aborted) break;
      const now = Date.now();
      const risk = inflight + unflushed.length + flushingCount;
      const drained = next >= todo.length && !retryQueue.length && inflight === 0;
      if (unflushed.length && (unflushed.length * 2 >= window || drained || now - lastFlush >= flushMs)) void flush(); // its failure lands in `fatal`
      if (drained && !flushing && !unflushed.length) break;
      const due = retryQueue.findIndex((r) => r.notBefore <= now);
      const canStart = risk < window && inflight < limiter.limit && limiter.waitMs() === 0;
      if (canStart && due >= 0) {
        const [r] = retryQueue.splice(due, 1);
        start(r.item, r.tries, r.failingSince);
        continue;
      }
      if (canStart && next < todo.length) {
        start(todo[next++], 0);
        continue;
      }
      // A finished request wakes the loop; a timer is needed only for what no request will bring: a
      // time-based flush, a retry that is not due yet, a pause after Retry-After.
      const reasons = [
        ...(unflushed.length ? [flushMs - (now - lastFlush)] : []),
        ...(limiter.waitMs() ? [limiter.waitMs()] : []),
        ...retryQueue.map((r) => r.notBefore - now),
      ];
      if (!reasons.length && inflight === 0 && !flushing) reasons.push(flushMs);
      if (!reasons.length) await changed;
      else {
        const soonest = Math.max(1, Math.min(...reasons));
        let timer: NodeJS.Timeout | undefined;
        const wait = opts.sleep ? opts.sleep(soonest) : new Promise<void>((r) => (timer = setTimeout(r, soonest)));
        await Promise.race([changed, wait]);
        clearTimeout(timer);
      }
    }
    // Whatever happened, what finished is written before the attempt ends (a cancelled or
    // superseded attempt only lets a write already under way finish: it starts none).
    while (inflight > 0 || flushing) await changed;
    if (!signal.aborted) await flush();
  } finally {
    signal.removeEventListener('abort', poke);
    opts.onProgress?.(progress());
  }
  if (fatal !== undefined) throw fatal;
  if (transient) throw transient;
  signal.throwIfAborted();
  return items.map((i) => done.get(id(i))!);
}
