/**
 * The sliding-window work runner under the answer, grade and evaluate steps: unit tests without
 * Temporal or a model server. Results in item order, finished items flushed as they come, a resume
 * that redoes only what was not flushed, a transient failure that costs only its own request, and
 * concurrency that backs off when the endpoint says it is overloaded.
 */
import { ModelCallError, StoreNotShared } from '../src/errors';
import { AdaptiveConcurrency } from '../src/model/concurrency';
import { readParts, runItems, type RunItemsOptions, type WorkProgress } from '../src/pipeline/work';
import { LocalBackend } from '../src/store/local';
import { Store } from '../src/store/store';
import { tempDir } from './support/stack';

type I = { id: string; n: number };
type O = { id: string; out: number; failed?: string };
const items = (n: number): I[] => Array.from({ length: n }, (_, i) => ({ id: `i${i}`, n: i }));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function opts(store: Store, list: I[], over: Partial<RunItemsOptions<I, O>> = {}): RunItemsOptions<I, O> {
  return {
    store,
    dir: 'runs/t/work/answer-000000-abc',
    phase: 'answer-grade shard 0',
    items: list,
    id: (x) => x.id,
    window: 8,
    concurrency: 4,
    work: async (i) => ({ id: i.id, out: i.n * 2 }),
    fail: (i, error) => ({ id: i.id, out: -1, failed: error }),
    giveUp: false,
    signal: new AbortController().signal,
    ...over,
  };
}

const newStore = () => new Store(new LocalBackend(tempDir('slearn-work-')));

describe('runItems', () => {
  it('returns results in item order although they finish out of order, and never has more than `window` at risk', async () => {
    const store = newStore();
    let inflight = 0;
    let most = 0;
    const progress: WorkProgress[] = [];
    const out = await runItems(
      opts(store, items(60), {
        window: 6,
        concurrency: 4,
        work: async (i) => {
          inflight++;
          most = Math.max(most, inflight);
          await sleep(((i.n * 7) % 5) * 4);
          inflight--;
          return { id: i.id, out: i.n * 2 };
        },
        onProgress: (p) => progress.push(p),
      }),
    );
    expect(out.map((o) => o.out)).toEqual(items(60).map((i) => i.n * 2));
    expect(most).toBeLessThanOrEqual(4);
    for (const p of progress) expect(p.done - p.flushed).toBeLessThanOrEqual(6);
    expect(progress.at(-1)).toMatchObject({ done: 60, flushed: 60, total: 60, resumed: 0 });
  });

  it('a slow request does not hold the others back (a sliding window, not chunk by chunk)', async () => {
    const store = newStore();
    const started: number[] = [];
    const t0 = Date.now();
    await runItems(
      opts(store, items(20), {
        window: 8,
        concurrency: 4,
        work: async (i) => {
          started.push(Date.now() - t0);
          await sleep(i.n === 0 ? 400 : 10);
          return { id: i.id, out: 0 };
        },
      }),
    );
    // Items 1..19 all start while item 0 is still running: nothing waits for the slow one's chunk.
    expect(started.slice(1).every((t) => t < 380)).toBe(true);
  });

  it('a retried attempt reads the flushed parts and asks only what was not flushed', async () => {
    const store = newStore();
    const ac = new AbortController();
    const asked: string[] = [];
    const first = runItems(
      opts(store, items(40), {
        window: 4,
        concurrency: 2,
        signal: ac.signal,
        work: async (i) => {
          asked.push(i.id);
          if (asked.length === 25) ac.abort(); // the worker dies here
          await sleep(2);
          return { id: i.id, out: i.n };
        },
      }),
    );
    await expect(first).rejects.toThrow();
    const flushed = await readParts<O>(store, 'runs/t/work/answer-000000-abc', (o) => o.id);
    // 25 items were asked when it died; at most `window` (4) of them were at risk.
    expect(flushed.size).toBeGreaterThanOrEqual(25 - 4);
    const again: string[] = [];
    const progress: WorkProgress[] = [];
    const out = await runItems(
      opts(store, items(40), {
        work: async (i) => {
          again.push(i.id);
          return { id: i.id, out: i.n };
        },
        onProgress: (p) => progress.push(p),
      }),
    );
    expect(out).toHaveLength(40);
    expect(again.length).toBe(40 - flushed.size);
    for (const id of again) expect(flushed.has(id)).toBe(false);
    // At most one window of work was lost to the crash.
    expect(again.length).toBeLessThanOrEqual(40 - 25 + 4);
    expect(progress.at(-1)?.resumed).toBe(flushed.size);
  });

  it('refuses to resume when the previous heartbeat says more was flushed than the store holds', async () => {
    const previous: WorkProgress = {
      phase: 'answer-grade shard 0',
      done: 30,
      flushed: 30,
      total: 40,
      resumed: 0,
      failed: 0,
      retries: 0,
      concurrency: 4,
      startedAt: 0,
    };
    await expect(runItems(opts(newStore(), items(40), { previous }))).rejects.toBeInstanceOf(StoreNotShared);
  });

  it('a transient failure costs only its own request: it is asked again in place, its neighbours are kept', async () => {
    const store = newStore();
    const calls = new Map<string, number>();
    const out = await runItems(
      opts(store, items(30), {
        sleep: () => sleep(1),
        work: async (i) => {
          const n = (calls.get(i.id) ?? 0) + 1;
          calls.set(i.id, n);
          if (i.n % 10 === 3 && n < 3) throw new ModelCallError('503 from the endpoint', 'transient', 503, undefined, true);
          return { id: i.id, out: i.n };
        },
      }),
    );
    expect(out.map((o) => o.out)).toEqual(items(30).map((i) => i.n));
    for (const [id, n] of calls) expect(n).toBe(['i3', 'i13', 'i23'].includes(id) ? 3 : 1);
  });

  it('a request that keeps failing fails the attempt only after its finished neighbours are written', async () => {
    const store = newStore();
    await expect(
      runItems(
        opts(store, items(20), {
          maxTries: 2,
          sleep: () => sleep(1),
          work: async (i) => {
            if (i.id === 'i7') throw new ModelCallError('connection reset', 'transient');
            return { id: i.id, out: i.n };
          },
        }),
      ),
    ).rejects.toThrow(/connection reset/);
    const flushed = await readParts<O>(store, 'runs/t/work/answer-000000-abc', (o) => o.id);
    expect(flushed.size).toBe(19);
    expect(flushed.has('i7')).toBe(false);
  });

  it('on the last attempt, an item that keeps failing becomes a failure record (ungradeable), and the run goes on', async () => {
    const out = await runItems(
      opts(newStore(), items(10), {
        giveUp: true,
        maxTries: 2,
        sleep: () => sleep(1),
        work: async (i) => {
          if (i.id === 'i4') throw new ModelCallError('500 from the endpoint', 'transient', 500);
          if (i.id === 'i5') throw new ModelCallError('400: prompt too long', 'item', 400);
          return { id: i.id, out: i.n };
        },
      }),
    );
    expect(out[4]).toMatchObject({ id: 'i4', failed: expect.stringMatching(/500/) });
    expect(out[5]).toMatchObject({ id: 'i5', failed: expect.stringMatching(/400/) });
    expect(out.filter((o) => o.failed)).toHaveLength(2);
  });

  it('on the last attempt, an endpoint that answers nobody fails the attempt instead of making every item ungradeable', async () => {
    const store = newStore();
    await expect(
      runItems(
        opts(store, items(10), {
          giveUp: true,
          maxTries: 2,
          sleep: () => sleep(1),
          work: async () => {
            throw new ModelCallError('cannot reach http://127.0.0.1:9/v1: Connection error.', 'transient');
          },
        }),
      ),
    ).rejects.toThrow(/cannot reach/);
    expect((await readParts<O>(store, 'runs/t/work/answer-000000-abc', (o) => o.id)).size).toBe(0);
  });

  it('a fatal error (a wrong key) stops at once', async () => {
    let calls = 0;
    await expect(
      runItems(
        opts(newStore(), items(50), {
          concurrency: 1,
          work: async () => {
            calls++;
            throw new ModelCallError('401: check the key', 'fatal', 401);
          },
        }),
      ),
    ).rejects.toThrow(/401/);
    expect(calls).toBeLessThanOrEqual(2);
  });

  it('an overloaded endpoint (429 with Retry-After) halves the concurrency and pauses until Retry-After', async () => {
    let inflight = 0;
    let overloaded = true;
    const seen: number[] = [];
    const progress: WorkProgress[] = [];
    const t0 = Date.now();
    let firstAfterPause = 0;
    await runItems(
      opts(newStore(), items(40), {
        window: 16,
        concurrency: 8,
        work: async (i) => {
          inflight++;
          seen.push(inflight);
          try {
            await sleep(5);
            if (overloaded && i.n === 5) {
              overloaded = false;
              throw new ModelCallError('429 slow down', 'transient', 429, 0.3, true);
            }
            if (!overloaded && !firstAfterPause && i.n > 12) firstAfterPause = Date.now() - t0;
            return { id: i.id, out: i.n };
          } finally {
            inflight--;
          }
        },
        onProgress: (p) => progress.push(p),
      }),
    );
    expect(Math.min(...progress.map((p) => p.concurrency))).toBeLessThan(8);
    expect(firstAfterPause).toBeGreaterThanOrEqual(250);
  });
});

describe('AdaptiveConcurrency', () => {
  it('halves on overload (once per episode), grows back by one per `limit` successes, never below 1', () => {
    let t = 0;
    const c = new AdaptiveConcurrency(16, 1, () => t);
    c.onOverload();
    expect(c.limit).toBe(8);
    c.onOverload(); // same episode (within a second)
    expect(c.limit).toBe(8);
    t += 1500;
    c.onOverload(2000);
    expect(c.limit).toBe(4);
    expect(c.waitMs()).toBe(2000);
    for (let i = 0; i < 4; i++) c.onSuccess();
    expect(c.limit).toBe(5);
    for (let k = 0; k < 10; k++) {
      t += 1500;
      c.onOverload();
    }
    expect(c.limit).toBe(1);
  });
});
