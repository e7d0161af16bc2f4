import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { connect, startRun } from './client';
import { summaryTable } from './cli/output';
import { watchRun } from './cli/watch';
import { saveReport } from './cli/reports';
import { runComparison, type BaselineKind } from './cli/compare';
import { STATE_DIR, trainerCommand } from './paths';
import { freePort, startDevServer, type DevServer } from './temporal/devServer';
import { runWorkers } from './worker';
import { installLogger } from './temporal/logging';
import { policyFromEnv, type WorkerPolicy } from './pipeline/policy';
import { trainerEnv } from './pipeline/trainer-process';

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

/**
 * The embedded OpenAI-compatible server (SmolLM2 on CPU) through the trainer contract's `serve`,
 * loading adapters only from the directory the worker stages them in.
 */
async function startModelServer(adapterRoot: string): Promise<{ baseUrl: string; proc: ChildProcess }> {
  const port = await freePort();
  const log = openSync(join(STATE_DIR, 'model-server.log'), 'a');
  const [cmd, ...pre] = trainerCommand();
  mkdirSync(adapterRoot, { recursive: true });
  const proc = spawn(cmd, [...pre, 'serve', '--base', 'smollm2-135m-instruct', '--host', '127.0.0.1', '--port', String(port), '--adapter-root', adapterRoot], {
    stdio: ['ignore', log, log],
    detached: true,
    // The model server gets what Python and torch need, not the worker's keys.
    env: trainerEnv(process.env, false),
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

/** What `startEmbeddedStack` started: a client, the model endpoint, and one call that stops it all. */
export interface EmbeddedStack {
  client: Awaited<ReturnType<typeof connect>>;
  baseUrl: string;
  uiUrl?: string;
  stop: () => Promise<void>;
}

/**
 * The demo's worker policy: the defaults (the working directory and the state directory, or
 * SLEARN_ALLOWED_PATHS), plus the directory of the config the user named, wherever it is.
 */
export function demoPolicy(configFile: string, env: NodeJS.ProcessEnv = process.env): WorkerPolicy {
  const policy = policyFromEnv(env, { stateDir: STATE_DIR });
  return { ...policy, paths: [...policy.paths, dirname(resolve(configFile))] };
}

/**
 * The offline stack of the demo and the benchmarks: the Temporal dev server (unless
 * TEMPORAL_ADDRESS names one), the embedded model server and a worker for every queue, on free
 * loopback ports, under `policy` (the worker's default from its environment otherwise).
 * SIGINT/SIGTERM stop everything it started.
 */
export async function startEmbeddedStack(opts: { policy?: WorkerPolicy } = {}): Promise<EmbeddedStack> {
  mkdirSync(STATE_DIR, { recursive: true });
  let server: DevServer | undefined;
  let model: { baseUrl: string; proc: ChildProcess } | undefined;
  const workerStop = new AbortController();
  let worker: Promise<void> | undefined;
  const cleanup = async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    workerStop.abort();
    // The worker's own failure (it could not connect, its bundle failed) surfaces here, at the latest.
    await worker?.catch((e: Error) => console.error(`the worker stopped with an error: ${e.message}`));
    stopProcessGroup(model?.proc);
    await server?.stop();
  };
  const onSignal = () => {
    console.error('\nstopping everything that was started…');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let address = process.env.TEMPORAL_ADDRESS;
    if (!address) {
      console.error('starting the Temporal dev server…');
      server = await startDevServer({ db: join(STATE_DIR, 'temporal.db'), logFile: join(STATE_DIR, 'temporal.log') });
      address = server.address;
      console.error(`Temporal on ${server.address}; web UI ${server.uiUrl}`);
    }
    const env = { ...process.env, TEMPORAL_ADDRESS: address };
    const adapterDir = join(STATE_DIR, 'adapters');
    console.error('starting the model server (SmolLM2-135M-Instruct on CPU; the first start converts the GGUF weights)…');
    model = await startModelServer(adapterDir);
    console.error(`model server on ${model.baseUrl}`);
    worker = runWorkers({ address, adapterDir, env, ...(opts.policy ? { policy: opts.policy } : {}) }, workerStop.signal);
    const client = await connect(env);
    return { client, baseUrl: model.baseUrl, ...(server ? { uiUrl: server.uiUrl } : {}), stop: cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** `slearn demo`: the whole job offline on the bundled data, and everything it started stopped at the end. */
export async function runDemo(opts: { configFile: string; compare: BaselineKind[] }): Promise<void> {
  const configFile = resolve(opts.configFile);
  if (!existsSync(configFile)) throw new Error(`${configFile} not found: run the demo from the project root`);
  // The demo shows its own progress; the SDK speaks only when something is wrong.
  installLogger('WARN');
  const stack = await startEmbeddedStack({ policy: demoPolicy(configFile) });
  try {
    const { client } = stack;
    const overrides = { model: { baseUrl: stack.baseUrl } };
    const handle = await startRun(client, configFile, { overrides });
    console.error(`run ${handle.workflowId} started${stack.uiUrl ? `: ${stack.uiUrl}/namespaces/default/workflows/${handle.workflowId}` : ''}`);
    const result = await watchRun(client, handle.workflowId);
    const report = await saveReport(result);
    console.log(summaryTable(result)); // its report line comes last, after any comparison
    if (opts.compare.length) await runComparison(client, configFile, result, opts.compare, { overrides });
    console.log(`\nreport: ${report}  (markdown: report.md beside it)`);
  } finally {
    await stack.stop();
  }
}
