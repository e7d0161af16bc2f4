import { join, resolve } from 'node:path';
import { bundleWorkflowCode, NativeConnection, Worker, type WorkflowBundle, type WorkflowBundleOption } from '@temporalio/worker';
import { activitiesFor, createActivities, QUEUE_ACTIVITIES, type WorkerDeps } from './activities';
import { InvalidInput } from './errors';
import { policyFromEnv, type WorkerPolicy } from './pipeline/policy';
import { openStore } from './store/open';
import type { Store } from './store/store';
import { installLogger } from './temporal/logging';
import { temporalTarget, unreachable } from './temporal/address';
import { dataConverter } from './temporal/dataConverter';
import { STATE_DIR, trainerCommand } from './paths';
import { ALL_QUEUES, TASK_QUEUE, TRAIN_TASK_QUEUE, type TaskQueue } from './schemas/run';
import { requireGpu } from './pipeline/trainer-process';

export interface WorkerOptions {
  /** Temporal's address (default: the standard client configuration, see temporal/address.ts). */
  address?: string;
  namespace?: string;
  /** 'slearn' runs the workflow and the data steps, 'slearn-train' training (a GPU host), 'slearn-model' adapter staging (the model server's host). */
  queues?: string[];
  trainer?: string[];
  policy?: WorkerPolicy;
  /** This host's scratch and adapter directories (default under SLEARN_HOME). */
  scratch?: string;
  adapterDir?: string;
  env?: NodeJS.ProcessEnv;
  onReady?: () => void;
}

const bundles = new Map<string, Promise<WorkflowBundle>>();
/**
 * Bundled once per process (and failure converter): restarting workers in one process (tests, the
 * demo) skips webpack. SLEARN_WORKFLOW_BUNDLE names a bundle written by `bundleWorkflowCode` from
 * this code, for the default converter (the tests build one for all their workers: webpack took
 * 6-8 s per worker start here).
 */
function workflowBundle(failureConverterPath?: string, env: NodeJS.ProcessEnv = process.env): Promise<WorkflowBundleOption> {
  if (env.SLEARN_WORKFLOW_BUNDLE && !failureConverterPath) return Promise.resolve({ codePath: env.SLEARN_WORKFLOW_BUNDLE });
  const key = failureConverterPath ?? '';
  let b = bundles.get(key);
  if (!b) {
    const logger = { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error };
    bundles.set(
      key,
      (b = bundleWorkflowCode({ workflowsPath: require.resolve('./workflows'), ...(failureConverterPath ? { failureConverterPath } : {}), logger })),
    );
  }
  return b;
}

/** One store object per URL per worker: S3 clients keep their connections. */
function storeCache(): (url: string) => Promise<Store> {
  const cache = new Map<string, Promise<Store>>();
  return (url) => {
    let s = cache.get(url);
    if (!s) cache.set(url, (s = openStore(url)));
    return s;
  };
}

export function workerDeps(opts: WorkerOptions = {}): WorkerDeps {
  const env = opts.env ?? process.env;
  return {
    policy: opts.policy ?? policyFromEnv(env, { stateDir: STATE_DIR }),
    env,
    openStore: storeCache(),
    scratch: resolve(opts.scratch ?? env.SLEARN_SCRATCH ?? join(STATE_DIR, 'scratch')),
    adapterDir: resolve(opts.adapterDir ?? env.SLEARN_ADAPTER_DIR ?? join(STATE_DIR, 'adapters')),
    trainer: opts.trainer ?? trainerCommand(env),
  };
}

/** The queues to serve (all when none is named); an unknown name is refused before anything connects. */
export function queuesToServe(named: string[] = []): TaskQueue[] {
  const unknown = named.filter((q) => !(ALL_QUEUES as readonly string[]).includes(q));
  if (unknown.length) throw new InvalidInput(`unknown task queue ${unknown.join(', ')}: the queues are ${ALL_QUEUES.join(', ')}`);
  return named.length ? (named as TaskQueue[]) : [...ALL_QUEUES];
}

/** What a worker on these queues serves, for its ready line: `slearn (workflow, prepare, ...); slearn-train (train)`. */
export function describeQueues(queues: TaskQueue[]): string {
  return queues.map((q) => `${q} (${[...(q === TASK_QUEUE ? ['workflow'] : []), ...QUEUE_ACTIVITIES[q]].join(', ')})`).join('; ');
}

/** Workers for the given queues on one connection, each with its own activities; resolves when they have all shut down. */
export async function runWorkers(opts: WorkerOptions = {}, signal?: AbortSignal): Promise<void> {
  const env = opts.env ?? process.env;
  const queues = queuesToServe(opts.queues);
  const converter = dataConverter(env); // a bad payload key fails before connecting
  const deps = workerDeps(opts);
  // SLEARN_REQUIRE_GPU=1: a training worker that would train on the CPU refuses to start, and says why.
  if (queues.includes(TRAIN_TASK_QUEUE)) await requireGpu(deps.trainer, env);
  const target = temporalTarget(env);
  const address = opts.address ?? target.address;
  const namespace = opts.namespace ?? target.namespace;
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect({ ...target.connection, address });
  } catch (e) {
    throw unreachable({ address, namespace }, e);
  }
  const activities = createActivities(deps);
  try {
    const workers = await Promise.all(
      queues.map(async (taskQueue) =>
        Worker.create({
          connection,
          namespace,
          taskQueue,
          activities: activitiesFor(taskQueue, activities),
          dataConverter: converter,
          // Only the main queue hosts workflows; the others are activities only.
          ...(taskQueue === TASK_QUEUE ? { workflowBundle: await workflowBundle(converter.failureConverterPath, env) } : {}),
          // Heartbeats carry cancellation back: a cancelled run must stop its trainer in seconds, not
          // after the default throttle of up to a minute. They are small, so this is cheap.
          maxHeartbeatThrottleInterval: '3s',
          defaultHeartbeatThrottleInterval: '3s',
          shutdownGraceTime: '10s',
        }),
      ),
    );
    signal?.addEventListener('abort', () => workers.forEach((w) => w.shutdown()), { once: true });
    opts.onReady?.();
    if (signal?.aborted) workers.forEach((w) => w.shutdown());
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await connection.close();
  }
}

if (require.main === module) {
  installLogger();
  const queues = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const ac = new AbortController();
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => ac.abort());
  runWorkers({ queues, onReady: () => console.error(`slearn worker ready on ${describeQueues(queuesToServe(queues))} (pid ${process.pid})`) }, ac.signal).catch(
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
