import { bundleWorkflowCode, NativeConnection, Worker, type WorkflowBundle } from '@temporalio/worker';
import { createActivities } from './activities';
import { installLogger } from './temporal/logging';
import { temporalAddress } from './temporal/address';
import { dataConverter } from './temporal/dataConverter';
import { trainerCommand } from './paths';
import { TASK_QUEUE, TRAIN_TASK_QUEUE } from './schemas/run';

export interface WorkerOptions {
  address?: string;
  namespace?: string;
  /** 'slearn' runs the workflow and the data steps; 'slearn-train' runs training (a GPU host). */
  queues?: string[];
  trainer?: string[];
  onReady?: () => void;
}

let bundle: Promise<WorkflowBundle> | undefined;
/** Bundled once per process: restarting workers in one process (tests, the demo) skips webpack. */
function workflowBundle(): Promise<WorkflowBundle> {
  bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('./workflows'), logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error } });
  return bundle;
}

/** Workers for the given queues on one connection; resolves when they have all shut down. */
export async function runWorkers(opts: WorkerOptions = {}, signal?: AbortSignal): Promise<void> {
  const converter = dataConverter(); // payload encryption when SLEARN_PAYLOAD_KEY is set; a bad key fails before connecting
  const connection = await NativeConnection.connect({ address: opts.address ?? temporalAddress() });
  const activities = createActivities({ trainerCommand: opts.trainer ?? trainerCommand() });
  const queues = opts.queues?.length ? opts.queues : [TASK_QUEUE, TRAIN_TASK_QUEUE];
  try {
    const workers = await Promise.all(
      queues.map(async (taskQueue) =>
        Worker.create({
          connection,
          namespace: opts.namespace ?? 'default',
          taskQueue,
          activities,
          dataConverter: converter,
          // Only the main queue hosts workflows; the train queue is activities only.
          ...(taskQueue === TASK_QUEUE ? { workflowBundle: await workflowBundle() } : {}),
          // Heartbeats carry cancellation back: a cancelled run must stop its trainer in seconds, not
          // after the default throttle of up to a minute. Heartbeats are small, so this is cheap.
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
  runWorkers({ queues, onReady: () => console.error(`slearn worker ready (pid ${process.pid})`) }, ac.signal).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
