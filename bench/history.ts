// History events per hour of training: the same run (a stand-in trainer that reports a step every
// 20 ms) through this code, or through an older checkout of slearn given as `--root DIR` (built,
// with its dist/), counting the events between the train activity's scheduling and its completion.
//   npx tsx bench/history.ts [--seconds 60] [--root /path/to/older/slearn]
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { temporal as proto } from '@temporalio/proto';
import { startFakeModel } from '../test/support/fakeModel';
import { FAKE_TRAINER, temporal, tempDir, testWorkerEnv } from '../test/support/stack';
import { makeWorld, paraphrases, writeJsonl } from '../test/support/world';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const SECONDS = Number(arg('seconds', '60'));
const ROOT = resolve(arg('root', join(__dirname, '..')));
const STEP_MS = 20;
const EventType = proto.api.enums.v1.EventType;

async function main() {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  // Whichever checkout is measured, through its own compiled client and worker.
  const { startRun } = require(join(ROOT, 'dist', 'client.js'));
  const { runWorkers } = require(join(ROOT, 'dist', 'worker.js'));
  // Unknown items × epochs / 4 per step ≈ SECONDS of 20 ms steps.
  const world = makeWorld(400);
  const fake = await startFakeModel({ items: world, knownPercent: 50 });
  const dir = tempDir('slearn-bench-history-');
  writeJsonl(join(dir, 'train.jsonl'), world);
  writeJsonl(join(dir, 'eval.jsonl'), paraphrases(world.slice(0, 20)));
  const steps = Math.ceil((SECONDS * 1000) / STEP_MS);
  const epochs = Math.max(1, Math.round(steps / Math.ceil(200 / 4)));
  writeFileSync(
    join(dir, 'slearn.yaml'),
    stringify({
      name: 'bench-history',
      dataset: 'train.jsonl',
      eval: 'eval.jsonl',
      model: { baseUrl: fake.baseUrl, name: 'fake-model' },
      train: { epochs, saveSteps: 100 },
      artifacts: './artifacts',
    }),
  );
  const server = await temporal(dir);
  const env = { ...process.env, ...testWorkerEnv(), FAKE_TRAINER_STEP_MS: String(STEP_MS), SLEARN_TRAINER: JSON.stringify(FAKE_TRAINER) };
  Object.assign(process.env, env);
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const worker = runWorkers({ address: server.address, trainer: FAKE_TRAINER, onReady: ready, env }, stop.signal);
  await isReady;
  const h = await startRun(server.client, join(dir, 'slearn.yaml'), { runId: 'bench-history' });
  const r = await h.result();
  let between = 0;
  let total = 0;
  let trainMs = 0;
  for await (const w of server.client.workflow.list({ query: `WorkflowId = 'bench-history'` })) {
    const events = (await server.client.workflow.getHandle('bench-history', w.runId).fetchHistory()).events ?? [];
    total += events.length;
    const s = events.findIndex(
      (e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED && e.activityTaskScheduledEventAttributes?.activityType?.name === 'train',
    );
    if (s < 0) continue;
    const id = Number(events[s].eventId);
    const c = events.findIndex(
      (e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED && Number(e.activityTaskCompletedEventAttributes?.scheduledEventId) === id,
    );
    between = c - s + 1;
    const t = (e: (typeof events)[number]) => Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);
    trainMs = t(events[c]) - t(events[s]);
  }
  stop.abort();
  await worker;
  await server.stop();
  await fake.close();
  const perHour = (between / (trainMs / 1000)) * 3600;
  console.log(`\n| code | training steps | training wall time | events from train scheduled to completed | whole run events | events per hour of training |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  console.log(
    `| ${ROOT} | ${r.train.steps} | ${(trainMs / 1000).toFixed(1)} s | ${between} | ${total} | ${between <= 4 ? `${between} per training, whatever its length` : perHour.toFixed(0)} |`,
  );
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
