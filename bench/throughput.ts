// Throughput of the answer/grade loop through slearn (Temporal workflow, shards, chunk flushes,
// artifact store) against a plain in-process loop with the same endpoint and concurrency, measured
// in the same run. The endpoint is the deterministic fake with a fixed latency per request, so the
// ratio isolates slearn's own overhead.  Run: `make bench` (or npx tsx bench/throughput.ts [items] [latency ms]).
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import pLimit from 'p-limit';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startRun } from '../src/client';
import { runWorkers } from '../src/worker';
import { ModelClient } from '../src/model/client';
import { matchGrade } from '../src/grading/match';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel } from '../test/support/fakeModel';
import { FAKE_TRAINER, temporal, tempDir } from '../test/support/stack';
import { makeWorld, writeConfig, writeJsonl } from '../test/support/world';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const N = Number(process.argv[2] ?? 2000);
const LATENCY_MS = Number(process.argv[3] ?? 10);
const CONCURRENCY = 16; // shardConcurrency 4 × answer.concurrency 4

async function main() {
  const world = makeWorld(N);
  const fake = await startFakeModel({ items: world, knownPercent: 50, latencyMs: LATENCY_MS });

  // Baseline: the same questions, same endpoint, same total concurrency, no durability at all.
  const client = new ModelClient({ baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 30 });
  const limit = pLimit(CONCURRENCY);
  let t = Date.now();
  await Promise.all(world.map((w) => limit(async () => matchGrade((await client.chat([{ role: 'user', content: w.question }]))[0], w.answer))));
  const baselineS = (Date.now() - t) / 1000;
  const askedByBaseline = fake.stats.chat;

  // slearn: the whole workflow, measured up to the end of answering and grading.
  const dir = tempDir('slearn-bench-');
  const server = await temporal(dir);
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const worker = runWorkers({ address: server.address, trainer: FAKE_TRAINER, onReady: ready }, stop.signal);
  await isReady;
  writeJsonl(join(dir, 'train.jsonl'), world.slice(0, N));
  const cfg = writeConfig(dir, fake.baseUrl, { shardSize: 64, shardConcurrency: 4, answer: { concurrency: 4, chunkSize: 16, maxTokens: 16 }, train: { epochs: 1 } });
  t = Date.now();
  const h = await startRun(server.client, cfg, { runId: 'bench' });
  const r = (await h.result()) as RunResult;
  const totalS = (Date.now() - t) / 1000;
  let events = 0;
  let runs = 0;
  for await (const w of server.client.workflow.list({ query: `WorkflowId = 'bench'` })) {
    events += w.historyLength ?? 0;
    runs++;
  }
  // Answer+grade wall time: from the audit of activity timings would be finer; the whole run
  // includes training with the stand-in trainer and evaluation (a second and third pass of N).
  const requests = fake.stats.chat - askedByBaseline;
  stop.abort();
  await worker;
  await server.stop();
  await fake.close();

  const rows = [
    ['items', String(N)],
    ['endpoint latency per request', `${LATENCY_MS} ms`],
    ['baseline: plain loop, items/s', (N / baselineS).toFixed(1)],
    ['slearn: requests through the workflow (answer + 2 eval passes)', String(requests)],
    ['slearn: requests/s over the whole run', (requests / totalS).toFixed(1)],
    ['ratio slearn / baseline (requests/s)', (requests / totalS / (N / baselineS)).toFixed(2)],
    ['same, without the stand-in training time', (requests / (totalS - r.train.trainSeconds) / (N / baselineS)).toFixed(2)],
    ['history events (all runs of the chain)', String(events)],
    ['history events per 1,000 items', ((events / N) * 1000).toFixed(0)],
    ['workflow runs (continue-as-new chain)', String(runs)],
    ['known / unknown', `${r.counts.known} / ${r.counts.unknown}`],
  ];
  const table = rows.map(([k, v]) => `| ${k} | ${v} |`).join('\n');
  console.log(`| figure | value |\n|---|---|\n${table}`);
  writeFileSync(join(dir, 'bench.md'), table);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
