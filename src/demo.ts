import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { connect, startRun } from './client';
import { summaryTable } from './cli/output';
import { watchRun } from './cli/watch';
import { ArtifactStore } from './artifacts/store';
import { STATE_DIR, trainerCommand } from './paths';
import { renderHtml, renderMarkdown, type ReportData } from './report/render';
import { freePort, startDevServer, type DevServer } from './temporal/devServer';
import { runWorkers } from './worker';
import { installLogger } from './temporal/logging';
import type { RunResult } from './schemas/run';
import { pct } from './metrics';
import { reportDir } from './activities/report';

async function waitHttp(url: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`model server exited with code ${proc.exitCode}; see ${join(STATE_DIR, 'model-server.log')}`);
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(2000) })).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`model server at ${url} not ready after ${timeoutMs / 1000}s`);
}

/** Starts the embedded OpenAI-compatible server (SmolLM2 on CPU) through the trainer contract's `serve`. */
async function startModelServer(): Promise<{ baseUrl: string; proc: ChildProcess }> {
  const port = await freePort();
  const log = openSync(join(STATE_DIR, 'model-server.log'), 'a');
  const proc = spawn(trainerCommand()[0], [...trainerCommand().slice(1), 'serve', '--base', 'smollm2-135m-instruct', '--host', '127.0.0.1', '--port', String(port)], {
    stdio: ['ignore', log, log],
    detached: true,
  });
  await waitHttp(`http://127.0.0.1:${port}/health`, proc, 600_000);
  return { baseUrl: `http://127.0.0.1:${port}/v1`, proc };
}

function stopProcessGroup(proc?: ChildProcess) {
  if (!proc?.pid || proc.exitCode !== null) return;
  try {
    process.kill(-proc.pid, 'SIGTERM');
  } catch {
    /* gone */
  }
}

/** `slearn demo`: the whole job offline on the bundled data, and everything it started stopped at the end. */
export async function runDemo(opts: { configFile: string; compareFull: boolean }): Promise<void> {
  const configFile = resolve(opts.configFile);
  if (!existsSync(configFile)) throw new Error(`${configFile} not found: run the demo from the project root`);
  mkdirSync(STATE_DIR, { recursive: true });
  // The demo shows its own progress; the SDK speaks only when something is wrong.
  installLogger('WARN');
  let server: DevServer | undefined;
  let model: { baseUrl: string; proc: ChildProcess } | undefined;
  const workerStop = new AbortController();
  let worker: Promise<void> | undefined;
  const cleanup = async () => {
    workerStop.abort();
    await worker?.catch(() => undefined);
    stopProcessGroup(model?.proc);
    await server?.stop();
  };
  const onSignal = () => {
    console.error('\nstopping everything the demo started…');
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (!process.env.TEMPORAL_ADDRESS) {
      console.error('starting the Temporal dev server…');
      server = await startDevServer({ db: join(STATE_DIR, 'temporal.db'), logFile: join(STATE_DIR, 'temporal.log') });
      process.env.TEMPORAL_ADDRESS = server.address;
      console.error(`Temporal on ${server.address}; web UI ${server.uiUrl}`);
    }
    console.error('starting the model server (SmolLM2-135M-Instruct on CPU; the first start converts the GGUF weights)…');
    model = await startModelServer();
    console.error(`model server on ${model.baseUrl}`);
    worker = runWorkers({ address: process.env.TEMPORAL_ADDRESS }, workerStop.signal);
    const client = await connect(process.env.TEMPORAL_ADDRESS);
    const baseUrl = model.baseUrl;
    const handle = await startRun(client, configFile, { adjust: (c) => void (c.model.baseUrl = baseUrl) });
    console.error(`run ${handle.workflowId} started${server ? `: ${server.uiUrl}/namespaces/default/workflows/${handle.workflowId}` : ''}`);
    const result = await watchRun(client, handle.workflowId);
    console.log(summaryTable(result));

    if (opts.compareFull) {
      console.error('\n--compare full: the same settings on the whole dataset (answers and grades reused)…');
      const full = await startRun(client, configFile, {
        reuseFrom: [handle.workflowId],
        adjust: (c) => {
          c.model.baseUrl = baseUrl;
          c.filter.replayKnownFraction = 1;
        },
      });
      const fullResult = await watchRun(client, full.workflowId);
      writeComparison(result, fullResult);
    }
    console.log(`\nreport: ${result.report.dir}/report.html  (markdown: report.md)`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

function writeComparison(self: RunResult, full: RunResult) {
  const root = resolve(STATE_DIR, 'artifacts');
  const store = new ArtifactStore(root);
  const losses = self.train.losses ? store.readJsonl<{ step: number; loss: number }>(self.train.losses) : [];
  const data: ReportData = {
    runId: self.runId,
    name: self.runId,
    counts: self.counts,
    filter: self.filter,
    train: self.train,
    evaluation: self.evaluation,
    losses,
    examples: [],
    compare: { label: 'full fine-tuning', train: full.train, evaluation: full.evaluation },
  };
  const dir = reportDir(root, self.runId);
  writeFileSync(join(dir, 'compare.md'), renderMarkdown(data));
  writeFileSync(join(dir, 'compare.html'), renderHtml(data));
  const ratio = full.train.trainSeconds ? self.train.trainSeconds / full.train.trainSeconds : NaN;
  const a = self.evaluation.tuned?.accuracy ?? self.evaluation.base.accuracy;
  const b = full.evaluation.tuned?.accuracy ?? full.evaluation.base.accuracy;
  console.log(`\nself-learning vs full fine-tuning (same settings, same evaluation file):`);
  console.log(`  trained items   ${self.filter.kept + self.filter.replayed} vs ${full.filter.kept + full.filter.replayed}`);
  console.log(`  train seconds   ${self.train.trainSeconds.toFixed(1)} vs ${full.train.trainSeconds.toFixed(1)}  (ratio ${ratio.toFixed(2)})`);
  console.log(`  tuned accuracy  ${pct(a)} vs ${pct(b)}  (difference ${((a - b) * 100).toFixed(1)} points)`);
  console.log(`  comparison report: ${dir}/compare.html`);
}
