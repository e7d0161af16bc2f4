// A million items end to end: the deterministic endpoint at 0 ms in a process of its own, the
// stand-in trainer, one worker (`dist/worker.js`, every queue) in a process of its own too, so that
// its memory is the worker's alone and not this benchmark's generated dataset. Prints wall time per
// stage, peak RSS of the worker process (the kernel's high-water mark, and the stage it was reached
// in from samples), history events per run of the continue-as-new chain, and the number of runs.
//   npx tsx bench/scale.ts [items=1000000]
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { temporal as proto } from '@temporalio/proto';
import { startRun } from '../src/client';
import { temporal, tempDir, workerProcess } from '../test/support/stack';
import { makeWorld, paraphrases, writeConfig, writeJsonl } from '../test/support/world';
import { endpointProcess } from './endpoint';

const N = Number(process.argv[2] ?? 1_000_000);
const EventType = proto.api.enums.v1.EventType;
/** VmRSS or VmHWM (peak) of a process, in bytes, from /proc. */
const procMemory = (pid: number, field: 'VmRSS' | 'VmHWM') =>
  Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
const ms = (t?: { seconds?: unknown; nanos?: number | null } | null) => (t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0);

async function main() {
  const dir = tempDir('slearn-scale-');
  const world = makeWorld(N);
  // Streamed to disk: a million JSON lines are never one string.
  const out = createWriteStream(join(dir, 'train.jsonl'));
  for (const w of world) if (!out.write(JSON.stringify(w) + '\n')) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
  writeJsonl(join(dir, 'eval.jsonl'), paraphrases(world.slice(0, 200)));
  const endpoint = await endpointProcess(world, 0);
  world.length = 0;

  const server = await temporal(dir);
  const worker = workerProcess(server.address, { FAKE_TRAINER_STEP_MS: '0' });
  await worker.ready;
  const pid = worker.proc.pid!;
  let peakRss = 0;
  let peakAt = 0;
  const sampler = setInterval(() => {
    const rss = procMemory(pid, 'VmRSS');
    if (rss > peakRss) [peakRss, peakAt] = [rss, Date.now()];
  }, 500);
  const cfg = writeConfig(dir, endpoint.baseUrl, {
    shardSize: 1000,
    shardConcurrency: 4,
    answer: { concurrency: 8, chunkSize: 32, maxTokens: 16 },
    train: { epochs: 1, saveSteps: 1_000_000 },
    model: { baseUrl: endpoint.baseUrl, name: 'fake-model', timeoutSeconds: 60 },
  });
  const t0 = Date.now();
  const r = await (await startRun(server.client, cfg, { runId: 'scale' })).result();
  const wall = (Date.now() - t0) / 1000;
  clearInterval(sampler);
  const highWater = procMemory(pid, 'VmHWM');

  const runs: { events: number }[] = [];
  const stages = new Map<string, { first: number; last: number }>();
  for await (const w of server.client.workflow.list({ query: `WorkflowId = 'scale'` })) {
    const events = (await server.client.workflow.getHandle('scale', w.runId).fetchHistory()).events ?? [];
    runs.push({ events: events.length });
    const byId = new Map<number, string>();
    for (const e of events) {
      if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        byId.set(Number(e.eventId), e.activityTaskScheduledEventAttributes!.activityType!.name!);
      const done = e.activityTaskCompletedEventAttributes;
      const name =
        e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED ? byId.get(Number(e.eventId)) : done ? byId.get(Number(done.scheduledEventId)) : undefined;
      if (!name) continue;
      const s = stages.get(name) ?? { first: Infinity, last: 0 };
      s.first = Math.min(s.first, ms(e.eventTime));
      s.last = Math.max(s.last, ms(e.eventTime));
      stages.set(name, s);
    }
  }
  worker.proc.kill('SIGTERM');
  await worker.exited;
  await server.stop();
  await endpoint.stop();

  console.log(`\n| figure | value |\n|---|---|`);
  console.log(
    `| items | ${r.counts.items.toLocaleString('en')} answered and graded (${r.counts.known.toLocaleString('en')} known, ${r.counts.unknown.toLocaleString('en')} unknown) |`,
  );
  console.log(`| wall time, whole run | ${(wall / 60).toFixed(1)} min |`);
  for (const [name, s] of stages) console.log(`| ${name} | ${((s.last - s.first) / 1000).toFixed(1)} s |`);
  const during = [...stages].filter(([, st]) => st.first <= peakAt && peakAt <= st.last + 1000).map(([name]) => name);
  console.log(
    `| peak RSS of the worker process | ${(highWater / 2 ** 20).toFixed(0)} MiB (kernel high-water mark); highest sample ${(peakRss / 2 ** 20).toFixed(0)} MiB, during ${during.join(', ') || 'no activity'} |`,
  );
  console.log(`| workflow runs (continue-as-new chain) | ${runs.length} |`);
  console.log(`| history events per run | ${runs.map((x) => x.events).join(', ')} |`);
  console.log(`| history events per 1,000 items | ${((runs.reduce((n, x) => n + x.events, 0) / N) * 1000).toFixed(1)} |`);
  console.log(`| training | ${r.train?.steps} steps on ${r.filter?.kept} items |`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
