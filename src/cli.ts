import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { audit, connect, getProgress, payloadValue, runInput, startRun } from './client';
import { validateAll } from './config';
import { readDataset } from './dataset/read';
import { formatProblem, InvalidInputError } from './problems';
import { STATE_DIR } from './paths';
import { startDevServer } from './temporal/devServer';
import { SERVER_STATE_FILE } from './temporal/address';
import { TASK_QUEUE, type RunInput } from './schemas/run';
import { selfLearning } from './workflows';
import { auditText, progressLine, summaryTable } from './cli/output';
import { watchRun } from './cli/watch';

/** Exit codes: 0 success, 1 invalid input or a failed run, 2 wrong usage. */
class Exit extends Error {
  constructor(readonly code: number, message = '') {
    super(message);
  }
}

const abortOnSignals = () => {
  const ac = new AbortController();
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => ac.abort());
  return ac.signal;
};

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
    .description('run workers: the main queue (workflow and data steps) and the training queue')
    .addOption(new Option('--queue <name...>', 'task queues to serve').default([TASK_QUEUE, 'slearn-train']))
    .action(async (o) => {
      // Loaded only here: the worker package (native core, webpack) is heavy for the other commands.
      const { runWorkers } = await import('./worker');
      (await import('./temporal/logging')).installLogger();
      await runWorkers({ queues: o.queue, onReady: () => console.error(`slearn worker ready on ${o.queue.join(', ')} (pid ${process.pid})`) }, abortOnSignals());
    });

  p.command('validate')
    .description('check a config and its datasets, or one dataset file: every problem as FILE:LINE: field: message')
    .argument('[config]', 'config file (YAML or JSON)')
    .option('--dataset <file>', 'check one dataset file alone')
    .action((config: string | undefined, o) => {
      if (!config && !o.dataset) throw new Exit(2, 'give a CONFIG or --dataset FILE');
      if (o.dataset) {
        const r = readDataset(o.dataset);
        if (r.problems.length) throw new InvalidInputError(r.problems);
        console.log(`${o.dataset}: ${r.items.length} items, ${r.format} format: OK`);
      }
      if (config) {
        const r = validateAll(config);
        console.log(`${config}: OK (${r.items} items, ${r.evalItems} evaluation items)`);
      }
    });

  p.command('run')
    .description('start a run; prints its id')
    .argument('<config>')
    .option('--wait', 'follow it with a progress bar and print a summary')
    .option('--id <id>', 'workflow id (default: NAME-DATE-TIME-RAND)')
    .action(async (config: string, o) => {
      // Validates before connecting: bad input is refused (exit 1) even when Temporal is unreachable.
      let client: Client | undefined;
      const handle = await startRun(async () => (client = await connect()), config, { runId: o.id });
      console.log(handle.workflowId);
      if (o.wait) console.log(summaryTable(await watchRun(client!, handle.workflowId)));
    });

  p.command('status')
    .description('one line of progress (or the result of a finished run)')
    .argument('<id>')
    .action(async (id: string) => {
      const client = await connect();
      const desc = await client.workflow.getHandle(id).describe();
      if (desc.status.name === 'COMPLETED') console.log(summaryTable(await client.workflow.getHandle(id).result()));
      else if (desc.status.name === 'RUNNING') console.log(progressLine(await getProgress(client, id)));
      else throw new Exit(1, `run ${id} is ${desc.status.name}; \`slearn audit ${id}\` shows why, \`slearn resume ${id}\` starts again from its finished steps`);
    });

  p.command('watch')
    .description('follow a run until it ends')
    .argument('<id>')
    .action(async (id: string) => {
      const client = await connect();
      console.log(summaryTable(await watchRun(client, id)));
    });

  p.command('audit')
    .description('timeline from the workflow history and the artifact lineage')
    .argument('<id>')
    .option('--json', 'machine-readable')
    .action(async (id: string, o) => {
      const a = await audit(await connect(), id);
      console.log(o.json ? JSON.stringify(a, null, 2) : auditText(a));
    });

  p.command('resume')
    .description('a new run that reuses the completed steps of an earlier (failed) run')
    .argument('<id>')
    .option('--wait', 'follow it')
    .action(async (id: string, o) => {
      const client = await connect();
      const a = await audit(client, id);
      const first = await client.workflow.getHandle(id, a.runs[0].runId).fetchHistory();
      const input = await payloadValue<RunInput>(client, first.events?.[0]?.workflowExecutionStartedEventAttributes?.input);
      if (!input) throw new Exit(1, `cannot read the input of run ${id}`);
      const handle = await startRun(client, input.configFile, { reuseFrom: [id, ...(input.reuseFrom ?? [])] });
      console.log(handle.workflowId);
      if (o.wait) console.log(summaryTable(await watchRun(client, handle.workflowId)));
    });

  const sched = p.command('schedule').description('recurring runs (Temporal schedules)');
  sched
    .command('create')
    .argument('<id>', 'schedule id')
    .argument('<config>')
    .option('--cron <expr>', 'cron expression, e.g. "0 3 * * 1"')
    .option('--every <interval>', 'interval, e.g. 24h')
    .action(async (id: string, config: string, o) => {
      if (!o.cron === !o.every) throw new Exit(2, 'give exactly one of --cron or --every');
      const loaded = validateAll(config);
      const client = await connect();
      await client.schedule.create({
        scheduleId: id,
        spec: o.cron ? { cronExpressions: [o.cron] } : { intervals: [{ every: o.every }] },
        // A run still going when the next is due is not doubled up: the next waits.
        policies: { overlap: ScheduleOverlapPolicy.BUFFER_ONE },
        action: { type: 'startWorkflow', workflowType: selfLearning, taskQueue: TASK_QUEUE, workflowId: `${loaded.config.name}-scheduled`, args: [runInput(loaded)] },
      });
      console.log(`schedule ${id} created`);
    });
  sched.command('list').action(async () => {
    const client = await connect();
    for await (const s of client.schedule.list()) {
      console.log(`${s.scheduleId}\t${s.state.paused ? 'paused' : 'active'}\tnext: ${s.info.nextActionTimes?.[0]?.toISOString() ?? '-'}`);
    }
  });
  for (const verb of ['pause', 'unpause', 'trigger', 'delete'] as const) {
    sched
      .command(verb)
      .argument('<id>')
      .action(async (id: string) => {
        const h = (await connect()).schedule.getHandle(id);
        await (verb === 'pause' ? h.pause() : verb === 'unpause' ? h.unpause() : verb === 'trigger' ? h.trigger() : h.delete());
        console.log(`schedule ${id}: ${verb} done`);
      });
  }

  p.command('demo')
    .description('everything, offline, on the bundled data: dev server, model server, worker, a run, a report')
    .addOption(new Option('--compare <what>', 'also fine-tune on the full dataset and compare').choices(['full']))
    .option('--config <file>', 'demo config', 'examples/agriculture/slearn.yaml')
    .action(async (o) => {
      const { runDemo } = await import('./demo');
      await runDemo({ configFile: o.config, compareFull: o.compare === 'full' });
    });

  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof InvalidInputError) {
      for (const pr of e.problems) console.error(formatProblem(pr));
      return 1;
    }
    if (e instanceof Exit) {
      if (e.message) console.error(e.message);
      return e.code;
    }
    console.error(`error: ${(e as Error).message ?? e}`);
    return 1;
  }
}
