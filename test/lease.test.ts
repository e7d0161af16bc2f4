/**
 * One trainer per run, across processes and hosts that share only the store. The lease is taken
 * atomically (create-if-absent of the next generation), renewed by its holder, taken over on
 * another host only after it expired, at once on this host when its worker died, and a holder
 * that lost it can neither release the new holder's lease nor publish a checkpoint.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalBackend } from '../src/store/local';
import { Store } from '../src/store/store';
import { LeaseLost, TrainerBusy } from '../src/errors';
import { Lease, type LeaseBody } from '../src/store/lease';
import { processId, thisHost } from '../src/proc';
import { ConfigSchema } from '../src/schemas/config';
import { train } from '../src/pipeline/train';
import type { StepCtx } from '../src/schemas/run';
import { stepEnv } from './support/env';
import { ROOT, tempDir, waitFor } from './support/stack';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface TrainerLogLine {
  pid: number;
  event: 'start' | 'exit';
  t: number;
  out?: string;
}

/** The most trainers alive at once, from the stand-in trainer's shared start/exit log. */
function mostAlive(file: string): { most: number; starts: number } {
  const lines = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as TrainerLogLine);
  let alive = 0;
  let most = 0;
  for (const l of lines.sort((a, b) => a.t - b.t)) {
    alive += l.event === 'start' ? 1 : -1;
    most = Math.max(most, alive);
  }
  return { most, starts: lines.filter((l) => l.event === 'start').length };
}

async function setup(dir: string) {
  const store = new Store(new LocalBackend(join(dir, 'store')));
  const config = ConfigSchema.parse({
    name: 'lease',
    dataset: '/x.jsonl',
    model: { baseUrl: 'http://127.0.0.1:9/v1', name: 'fake-model' },
    train: { epochs: 40, saveSteps: 5 },
  });
  const ctx: StepCtx = { runId: 'lease-run', store: store.url, config: await store.putJson(config) };
  const rows = Array.from({ length: 8 }, (_, i) => ({
    messages: [
      { role: 'user', content: `q${i}` },
      { role: 'assistant', content: `a${i}` },
    ],
  }));
  return { store, ctx, trainSet: await store.putJsonl(rows) };
}

describe('the training lease', () => {
  it('two attempts in one process: one trains, the other is told to retry later, then finds the result', async () => {
    const dir = tempDir();
    const log = join(dir, 'trainers.log');
    const { ctx, trainSet } = await setup(dir);
    const env = { ...process.env, SLEARN_TRAINER_ENV: 'FAKE_TRAINER_*', FAKE_TRAINER_STEP_MS: '20', FAKE_TRAINER_LOG: log };
    const a = train(stepEnv({ env, label: 'attempt-1' }), { ctx, trainSet });
    await sleep(300);
    await expect(train(stepEnv({ env, label: 'attempt-2' }), { ctx, trainSet })).rejects.toBeInstanceOf(TrainerBusy);
    const ra = await a;
    const rb = await train(stepEnv({ env, label: 'attempt-3' }), { ctx, trainSet });
    expect(rb).toEqual(ra);
    expect(mostAlive(log)).toEqual({ most: 1, starts: 1 });
  });

  it('two worker processes on one host: exactly one trainer alive at every moment', async () => {
    const dir = tempDir();
    const log = join(dir, 'trainers.log');
    const { ctx, trainSet } = await setup(dir);
    const spec = join(dir, 'spec.json');
    writeFileSync(spec, JSON.stringify({ ctx, trainSet }));
    const env = { ...process.env, FAKE_TRAINER_STEP_MS: '15', FAKE_TRAINER_LOG: log };
    // Each process retries on TrainerBusy, as Temporal would, until it gets the result.
    const run = () =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(process.execPath, [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), join(ROOT, 'test', 'support', 'trainUntilDone.ts'), spec], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        p.stdout.on('data', (b) => (out += b));
        p.stderr.on('data', (b) => (out += b));
        p.on('exit', (code) => resolve({ code, out }));
      });
    const [x, y] = await Promise.all([run(), run()]);
    expect(x.code).toBe(0);
    expect(y.code).toBe(0);
    const results = [x, y].map((r) => JSON.parse(r.out.trim().split('\n').at(-1)!));
    expect(results[0].adapter).toEqual(results[1].adapter);
    // One trained at once; the other was told to wait until it could read the result.
    expect(Math.min(...results.map((r) => r.busy))).toBe(0);
    expect(Math.max(...results.map((r) => r.busy))).toBeGreaterThan(0);
    expect(mostAlive(log)).toEqual({ most: 1, starts: 1 });
  }, 120_000);

  it('a holder that stopped renewing keeps its lease until it expires, then is taken over', async () => {
    const store = new Store(new LocalBackend(tempDir()));
    // A live process that holds the lease but renews nothing (a hung worker).
    const hung = spawn('sleep', ['60']);
    try {
      const body: LeaseBody = { ...thisHost(), token: 'hung#1', what: 'test', worker: processId(hung.pid), renewedAt: Date.now(), ttlMs: 1500 };
      await store.writeDoc('leases/r/train/0000000001.json', body, { ifAbsent: true });
      const first = await Lease.acquire(store, 'leases/r/train', { token: 'me#1', what: 'test', ttlMs: 1500 });
      expect(first).toMatchObject({ busy: expect.stringMatching(/held by worker pid/) });
      await sleep(1700);
      const second = await Lease.acquire(store, 'leases/r/train', { token: 'me#2', what: 'test', ttlMs: 1500 });
      expect(second).toBeInstanceOf(Lease);
      expect((second as Lease).gen).toBe(2);
    } finally {
      hung.kill();
    }
  });

  it('a lease naming another host is honoured until it expires, even though no local process matches it', async () => {
    const store = new Store(new LocalBackend(tempDir()));
    const body: LeaseBody = { host: 'gpu-host-a', bootId: 'another-boot', token: 'a#1', what: 'test', worker: { pid: 1 }, renewedAt: Date.now(), ttlMs: 2000 };
    await store.writeDoc('leases/r/train/0000000001.json', body, { ifAbsent: true });
    const t0 = Date.now();
    let got: Lease | undefined;
    while (!got) {
      const r = await Lease.acquire(store, 'leases/r/train', { token: 'b#1', what: 'test', ttlMs: 2000 });
      if (r instanceof Lease) got = r;
      else await sleep(100);
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
  });

  it('a holder that lost its lease can neither keep it, nor release the new holder, nor publish', async () => {
    const store = new Store(new LocalBackend(tempDir()));
    const a = (await Lease.acquire(store, 'leases/r/train', { token: 'a#1', what: 'test', ttlMs: 300 })) as Lease;
    // Another host's holder that let it expire: simulate by rewriting its body as from elsewhere.
    await store.writeDoc(a.key, { host: 'elsewhere', token: 'a#1', what: 'test', worker: { pid: 1 }, renewedAt: Date.now() - 10_000, ttlMs: 300 });
    const b = (await Lease.acquire(store, 'leases/r/train', { token: 'b#1', what: 'test', ttlMs: 300 })) as Lease;
    expect(b.gen).toBe(2);
    await expect(a.assertHeld()).rejects.toBeInstanceOf(LeaseLost);
    await expect(a.renew()).rejects.toBeInstanceOf(LeaseLost);
    await a.release();
    await expect(b.assertHeld()).resolves.toBeUndefined();
    expect(await store.readDoc<LeaseBody>(b.key)).toMatchObject({ token: 'b#1' });
    expect((await store.readDoc<LeaseBody>(b.key))?.released).toBeUndefined();
  });

  it('an orphaned trainer of a dead worker on this host is stopped before the takeover', async () => {
    const store = new Store(new LocalBackend(tempDir()));
    const deadWorker = spawnSync('true').pid;
    const orphan = spawn('sleep', ['60'], { detached: true });
    const body: LeaseBody = {
      ...thisHost(),
      token: 'dead#1',
      what: 'test',
      worker: { pid: deadWorker },
      child: processId(orphan.pid),
      renewedAt: Date.now(),
      ttlMs: 60_000,
    };
    await store.writeDoc('leases/r/train/0000000001.json', body, { ifAbsent: true });
    const stopped: number[] = [];
    const got = await Lease.acquire(store, 'leases/r/train', {
      token: 'me#1',
      what: 'test',
      ttlMs: 60_000,
      stopOrphan: async (child) => {
        stopped.push(child.pid);
        process.kill(-child.pid, 'SIGTERM');
      },
    });
    expect(got).toBeInstanceOf(Lease);
    expect(stopped).toEqual([orphan.pid]);
    await waitFor(() => orphan.exitCode !== null || orphan.signalCode !== null, 5000, 'the orphan to stop');
  });
});
