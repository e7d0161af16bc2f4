import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import type { Client } from '@temporalio/client';
import { audit, connect, listRuns, runInputOf, runStatus, startRun } from './client';
import { validateAll } from './config';
import { looksLikeDataset, readDataset } from './dataset/read';
import { InvalidInput } from './errors';
import { Exit, EXIT, reportFailure, UsageError } from './cli/exit';
import { STATE_DIR } from './paths';
import { startDevServer } from './temporal/devServer';
import { SERVER_STATE_FILE } from './temporal/address';
import { ALL_QUEUES, type RunInput, type RunResult } from './schemas/run';
import { auditText, listTable, progressLine, summaryTable } from './cli/output';
import { watchRun } from './cli/watch';
import { saveReport } from './cli/reports';
import { modelsCommand } from './cli/models';
import { scheduleCommand } from './cli/schedule';
import { compareCommandOption, runComparison } from './cli/compare';

export const abortOnSignals = () => {
  const ac = new AbortController();
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => ac.abort());
  return ac.signal;
};

const json = (v: unknown) => console.log(JSON.stringify(v, null, 2));

/** Waits for a run, saves its report where people look, prints the summary. */
async function follow(client: Client, runId: string, asJson = false): Promise<RunResult> {
  const result = await watchRun(client, runId);
  const report = await saveReport(result);
  if (asJson) json({ ...result, ...(report ? { reportPath: report } : {}) });
  else console.log(summaryTable(result, report));
  return result;
}

function program(): Command {
  const p = new Command('slearn')
    .description('Adapt an LLM to a domain by self-learning (SLearnLLM), as a durable Temporal workflow')
    .exitOverride()
    .showHelpAfterError();

  p.command('server')
    .description('run the embedded Temporal dev server (SQLite file, web UI) until Ctrl-C')
    .option('--db <file>', 'SQLite file that keeps runs across restarts', join(STATE_DIR, 'temporal.db'))
    .option('--port <n>', 'gRPC port', (v) => Number(v), 7233)
    .option('--ui-port <n>', 'web UI port', (v) => Number(v), 8233)
    .action(async (o) => {
      const srv = await startDevServer({ db: o.db, port: o.port, uiPort: o.uiPort, logFile: join(STATE_DIR, 'temporal.log') });
      mkdirSync(dirname(SERVER_STATE_FILE), { recursive: true });
      writeFileSync(SERVER_STATE_FILE, JSON.stringify({ address: srv.address, ui: srv.uiUrl, pid: srv.process.pid, db: o.db }));
      console.log(`Temporal dev server on ${srv.address} (state in ${o.db})\nweb UI: ${srv.uiUrl}\nCtrl-C to stop.`);
      const signal = abortOnSignals();
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
      await srv.stop();
      rmSync(SERVER_STATE_FILE, { force: true });
    });

  p.command('worker')
    .description('run workers: the main queue (workflow, data steps), training, and adapter staging for the model server')
    .addOption(new Option('--queue <name...>', 'task queues to serve').default([...ALL_QUEUES]))
    .option('--scratch <dir>', "this host's scratch directory (training data, checkpoints)")
    .option('--adapter-dir <dir>', "where adapters are staged for this host's model server (its --adapter-root)")
    .action(async (o) => {
      // Loaded only here: the worker package (native core, webpack) is heavy for the other commands.
      const { runWorkers } = await import('./worker');
      (await import('./temporal/logging')).installLogger();
      await runWorkers(
        {
          queues: o.queue,
          scratch: o.scratch,
          adapterDir: o.adapterDir,
          onReady: () => console.error(`slearn worker ready on ${o.queue.join(', ')} (pid ${process.pid})`),
        },
        abortOnSignals(),
      );
    });

  p.command('validate')
    .description('check a config and its datasets, or a dataset file: every problem as FILE:LINE: field: message')
    .argument('[file]', 'a config (YAML or JSON) or a dataset (recognised by its content or extension)')
    .option('--dataset <file>', 'check FILE as a dataset, whatever it looks like')
    .action(async (file: string | undefined, o) => {
      if (!file && !o.dataset) throw new UsageError('give a CONFIG or a dataset FILE');
      const dataset: string | undefined = o.dataset ?? (file && looksLikeDataset(file) ? file : undefined);
      if (dataset) {
        const r = await readDataset(dataset);
        if (r.problems.length) throw new InvalidInput(r.problems);
        for (const n of r.notices) console.error(n);
        console.log(`${dataset}: ${r.count} items, ${r.format ?? r.fileType} format: OK`);
        if (!file || file === dataset) return;
      }
      const v = await validateAll(file!);
      for (const n of v.notices) console.error(n);
      console.log(
        `${file}: OK (${v.items} items${v.evalItems !== undefined ? `, ${v.evalItems} evaluation items` : ', a held-out split for evaluation'}; artifacts in ${v.store})`,
      );
    });

  p.command('schema')
    .description("print the config's JSON Schema (generated from the zod schema; point your editor at it)")
    .action(async () => {
      const { configJsonSchema } = await import('./schemas/generated');
      json(configJsonSchema());
    });

  p.command('run')
    .description('start a run; prints its id')
    .argument('<config>')
    .option('--wait', 'follow it with a progress bar and print a summary')
    .option('--id <id>', 'workflow id (default: NAME-DATE-TIME-RAND)')
    .addOption(compareCommandOption())
    .option('--json', 'print the result as JSON (with --wait)')
    .action(async (config: string, o) => {
      // Validates before connecting: bad input is refused (exit 1) even when Temporal is unreachable.
      let client: Client | undefined;
      const handle = await startRun(async () => (client = await connect()), config, { runId: o.id });
      console.log(handle.workflowId);
      if (!o.wait && !o.compare) return;
      const result = await follow(client!, handle.workflowId, o.json);
      if (o.compare) await runComparison(client!, config, result, o.compare, {});
    });

  p.command('status')
    .description('where a run is: stage, items, known/unknown, training step and loss, ETA (or its result)')
    .argument('<id>')
    .option('--json', 'machine-readable')
    .action(async (id: string, o) => {
      const s = await runStatus(await connect(), id);
      if (o.json) return json(s);
      if (s.result) console.log(summaryTable(s.result));
      else if (s.status === 'RUNNING') console.log(progressLine(s));
      else
        throw new Exit(
          EXIT.failed,
          `run ${id} is ${s.status}${s.failure ? `: ${s.failure}` : ''}; \`slearn audit ${id}\` shows why, \`slearn resume ${id}\` starts again from its finished steps`,
        );
    });

  p.command('watch')
    .description('follow a run until it ends')
    .argument('<id>')
    .option('--json', 'print the result as JSON')
    .action(async (id: string, o) => {
      await follow(await connect(), id, o.json);
    });

  p.command('list')
    .description('runs on the namespace: status, stage, known/unknown, accuracy, promoted')
    .option('--config <name>', 'only runs of this config')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 20)
    .option('--json', 'machine-readable')
    .action(async (o) => {
      const runs = await listRuns(await connect(), { limit: o.limit, config: o.config });
      if (o.json) json(runs);
      else console.log(runs.length ? listTable(runs) : 'no runs yet');
    });

  p.command('cancel')
    .description('stop a run (its trainer stops too)')
    .argument('<id>')
    .action(async (id: string) => {
      await (await connect()).workflow.getHandle(id).cancel();
      console.log(`run ${id}: cancellation requested`);
    });

  p.command('audit')
    .description('timeline from the workflow history, what it trained on, the promotion decision, and the artifact lineage')
    .argument('<id>')
    .option('--json', 'machine-readable')
    .action(async (id: string, o) => {
      const a = await audit(await connect(), id);
      if (o.json) json(a);
      else console.log(auditText(a));
    });

  p.command('report')
    .description("copy a finished run's report from the store to .slearn/runs/<id>/ and print its path")
    .argument('<id>')
    .action(async (id: string) => {
      const s = await runStatus(await connect(), id);
      if (!s.result) throw new Exit(EXIT.failed, `run ${id} is ${s.status}: it has no report yet`);
      console.log(await saveReport(s.result));
    });

  p.command('resume')
    .description('a new run that reuses the completed steps of an earlier (failed) run')
    .argument('<id>')
    .option('--wait', 'follow it')
    .action(async (id: string, o) => {
      const client = await connect();
      const input: RunInput | undefined = await runInputOf(client, id);
      if (!input) throw new Exit(EXIT.failed, `cannot read the input of run ${id}: check the id with \`slearn list\``);
      const handle = await startRun(client, input.configFile, {
        reuseFrom: [id, ...(input.reuseFrom ?? [])],
        ...(input.overrides ? { overrides: input.overrides } : {}),
        ...(input.baseline ? { baseline: input.baseline } : {}),
      });
      console.log(handle.workflowId);
      if (o.wait) await follow(client, handle.workflowId);
    });

  p.addCommand(scheduleCommand());
  p.addCommand(modelsCommand());

  p.command('codec-server')
    .description('decode encrypted payloads for the Temporal web UI (and `temporal workflow show --codec-endpoint`)')
    .option('--port <n>', 'port on 127.0.0.1', (v) => Number(v), 8888)
    .option('--origin <url...>', "the web UI's origin (CORS)", ['http://localhost:8233', 'http://127.0.0.1:8233'])
    .option('--token-env <name>', 'variable holding the bearer token the UI must send', 'SLEARN_CODEC_TOKEN')
    .action(async (o) => {
      const { EncryptionCodec, parseKey, KEY_ENV } = await import('./temporal/codec');
      const { codecServer } = await import('./temporal/codecServer');
      const key = process.env[KEY_ENV];
      if (!key) throw new Exit(EXIT.failed, `${KEY_ENV} is not set: there is nothing to decode`);
      const token = process.env[o.tokenEnv];
      if (!token || token.length < 16)
        throw new Exit(
          EXIT.failed,
          `set ${o.tokenEnv} to a token of at least 16 characters (e.g. \`openssl rand -hex 24\`), and give the same token to the web UI`,
        );
      const old = (process.env.SLEARN_PAYLOAD_OLD_KEYS ?? '')
        .split(',')
        .filter(Boolean)
        .map((k) => parseKey(k));
      const server = codecServer(new EncryptionCodec(parseKey(key), old, true), { origins: o.origin, token });
      await new Promise<void>((r) => server.listen(o.port, '127.0.0.1', () => r()));
      console.log(`codec server on http://127.0.0.1:${o.port} for ${o.origin.join(', ')}; Ctrl-C to stop`);
      const signal = abortOnSignals();
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
      server.close();
    });

  p.command('demo')
    .description('everything, offline, on the bundled data: dev server, model server, worker, a run, a report')
    .addOption(compareCommandOption())
    .option('--config <file>', 'demo config', 'examples/agriculture/slearn.yaml')
    .action(async (o) => {
      const { runDemo } = await import('./demo');
      await runDemo({ configFile: o.config, compare: o.compare ?? [] });
    });

  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    return reportFailure(e);
  }
}
