import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { WorkerPolicy } from '../../src/pipeline/policy';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { runWorkers, type WorkerOptions } from '../../src/worker';
import { startDevServer, type DevServer, type DevServerOptions } from '../../src/temporal/devServer';

export const ROOT = resolve(__dirname, '..', '..');
export const FAKE_TRAINER = ['node', join(ROOT, 'test', 'support', 'fakeTrainer.js')];

export function tempDir(prefix = 'slearn-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** What test workers may touch: loopback endpoints (the default), files under the temp dir and the project, any S3 store. */
export function testPolicy(over: Partial<WorkerPolicy> = {}): WorkerPolicy {
  return { endpoints: ['http://127.0.0.1:'], keyEnvs: ['SLEARN_API_KEY'], paths: [tmpdir(), ROOT], stores: ['s3://'], ...over };
}

/** The environment of a worker process in tests: the same policy as testPolicy(), and the stand-in trainer's knobs passed through. */
export function testWorkerEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    SLEARN_ALLOWED_PATHS: [tmpdir(), ROOT].join(','),
    SLEARN_ALLOWED_STORES: 's3://',
    SLEARN_TRAINER_ENV: 'FAKE_TRAINER_*',
    SLEARN_SCRATCH: tempDir('slearn-scratch-'),
    SLEARN_ADAPTER_DIR: tempDir('slearn-adapters-'),
    ...extra,
  };
}

/** A real Temporal dev server on a free loopback port, headless, state in `dir`. */
export async function temporal(dir: string, opts: DevServerOptions = {}): Promise<DevServer & { client: Client }> {
  const srv = await startDevServer({ headless: true, db: join(dir, 'temporal.db'), logFile: join(dir, 'temporal.log'), ...opts });
  const connection = await Connection.connect({ address: srv.address });
  const client = new Client({ connection });
  return {
    ...srv,
    client,
    stop: async () => {
      await connection.close();
      await srv.stop();
    },
  };
}

export interface WorkerProcess {
  proc: ChildProcess;
  ready: Promise<void>;
  exited: Promise<void>;
  output: string[];
}

/** `node dist/worker.js` in a process of its own, so a test can SIGKILL it like a crashed host. */
export function workerProcess(address: string, env: NodeJS.ProcessEnv = {}, queues: string[] = []): WorkerProcess {
  const proc = spawn(process.execPath, [join(ROOT, 'dist', 'worker.js'), ...queues], {
    env: { ...process.env, ...testWorkerEnv(), TEMPORAL_ADDRESS: address, SLEARN_TRAINER: JSON.stringify(FAKE_TRAINER), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  let onReady: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const collect = (b: Buffer) => {
    const s = b.toString();
    output.push(s);
    if (s.includes('slearn worker ready')) onReady();
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return { proc, ready, exited, output };
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 60_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Workers for every queue in this process, polling when this resolves; call the result to stop them. */
export async function inProcessWorker(address: string, trainer: string[] = FAKE_TRAINER, opts: Partial<WorkerOptions> = {}): Promise<() => Promise<void>> {
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const env = { ...process.env, ...testWorkerEnv(), ...(opts.env ?? {}) };
  const running = runWorkers(
    { address, trainer, policy: testPolicy(), scratch: env.SLEARN_SCRATCH, adapterDir: env.SLEARN_ADAPTER_DIR, ...opts, env, onReady: ready },
    stop.signal,
  );
  await Promise.race([isReady, running]);
  return async () => {
    stop.abort();
    await running;
  };
}
