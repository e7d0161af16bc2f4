// Throughput of the answer-and-grade stage through slearn (Temporal workflow, shard activities,
// sliding window, parts flushed to the store, heartbeats) against a plain async loop with the same
// concurrency against the same endpoint, measured side by side in one run; and the history size.
// The endpoint is the deterministic fake with a fixed latency, so the ratio isolates slearn's cost.
//   npx tsx bench/throughput.ts [items=10000] [latencies=10,100]
import pLimit from 'p-limit';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { temporal as proto } from '@temporalio/proto';
import { startRun } from '../src/client';
import { ModelClient } from '../src/model/client';
import { matchGrade } from '../src/grading/match';
import { endpointProcess } from './endpoint';
import { inProcessWorker, temporal, tempDir } from '../test/support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from '../test/support/world';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const N = Number(process.argv[2] ?? 10_000);
const LATENCIES = (process.argv[3] ?? '10,100').split(',').map(Number);
const LANES = 4;
const PER_SHARD = 4;
const CONCURRENCY = LANES * PER_SHARD;
const EventType = proto.api.enums.v1.EventType;
const ms = (t?: { seconds?: unknown; nanos?: number | null } | null) => (t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0);

async function measure(latencyMs: number) {
  const world = makeWorld(N);
  const fake = await endpointProcess(world, latencyMs);
  // Baseline: the same questions, the same endpoint and grading, the same total concurrency, no durability.
  const client = new ModelClient({ baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 60 });
  const limit = pLimit(CONCURRENCY);
  let cpu = process.cpuUsage();
  let t = Date.now();
  await Promise.all(
    world.map((w) => limit(async () => matchGrade((await client.chat([{ role: 'user', content: w.question }], { maxTokens: 16 }))[0], w.answer))),
  );
  const baselineS = (Date.now() - t) / 1000;
  const baseCpu = process.cpuUsage(cpu);

  // slearn: the whole workflow; the stage is timed from its history (first shard scheduled to last shard done).
  const dir = tempDir('slearn-bench-');
  const server = await temporal(dir);
  const stop = await inProcessWorker(server.address, undefined, { env: { ...process.env, FAKE_TRAINER_STEP_MS: '0' } });
  writeWorld(dir, world, paraphrases(world.slice(0, 20)));
  const cfg = writeConfig(dir, fake.baseUrl, {
    shardConcurrency: LANES,
    answer: { concurrency: PER_SHARD, maxTokens: 16 },
    shardSize: 2000, // the default
    train: { epochs: 1 },
    promote: { retentionSample: 20 },
  });
  const runId = `bench-${latencyMs}`;
  cpu = process.cpuUsage();
  t = Date.now();
  const r = await (await startRun(server.client, cfg, { runId })).result();
  const runCpu = process.cpuUsage(cpu);
  const totalS = (Date.now() - t) / 1000;
  let events = 0;
  let runs = 0;
  let first = Infinity;
  let last = 0;
  for await (const w of server.client.workflow.list({ query: `WorkflowId = '${runId}'` })) {
    runs++;
    const history = await server.client.workflow.getHandle(runId, w.runId).fetchHistory();
    const evs = history.events ?? [];
    events += evs.length;
    const shardIds = new Set<number>();
    for (const e of evs) {
      if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED && e.activityTaskScheduledEventAttributes?.activityType?.name === 'answerGradeShard') {
        shardIds.add(Number(e.eventId));
        first = Math.min(first, ms(e.eventTime));
      }
      if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED && shardIds.has(Number(e.activityTaskCompletedEventAttributes?.scheduledEventId)))
        last = Math.max(last, ms(e.eventTime));
    }
  }
  await stop();
  await server.stop();
  await fake.stop();
  const stageS = (last - first) / 1000;
  // CPU of this process (client and worker) per item: the baseline's loop, and the whole slearn run
  // (answer+grade, the evaluation passes on 20+20 items, training, bookkeeping).
  console.error(
    `cpu ms/item: baseline ${((baseCpu.user + baseCpu.system) / 1000 / N).toFixed(3)}, slearn run ${((runCpu.user + runCpu.system) / 1000 / N).toFixed(3)}`,
  );
  return {
    latencyMs,
    baseline: N / baselineS,
    slearn: N / stageS,
    ratio: baselineS / stageS,
    totalS,
    events,
    perThousand: (events / N) * 1000,
    runs,
    items: r.counts.items,
  };
}

async function main() {
  const rows = [];
  for (const l of LATENCIES) rows.push(await measure(l));
  console.log(`\n${N} items, ${LANES} shards in flight × ${PER_SHARD} requests = ${CONCURRENCY} in flight (baseline: the same ${CONCURRENCY})\n`);
  console.log(
    '| endpoint latency | plain loop items/s | slearn answer+grade items/s | ratio | whole run (s) | history events | per 1,000 items | workflow runs |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.latencyMs} ms | ${r.baseline.toFixed(1)} | ${r.slearn.toFixed(1)} | ${r.ratio.toFixed(2)} | ${r.totalS.toFixed(1)} | ${r.events} | ${r.perThousand.toFixed(1)} | ${r.runs} |`,
    );
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
