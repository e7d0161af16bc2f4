import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { audit, connect, listRuns, runInputOf, runStatus, startRun } from '../client';
import type { RunInput, RunResult } from '../schemas/run';
import { compareCommandOption, runComparison } from './compare';
import { Exit, EXIT } from './exit';
import { auditText, listTable, printJson, progressLine, summaryTable } from './output';
import { saveReport } from './reports';
import { watchRun } from './watch';

/** Waits for a run, saves its report where people look, prints the summary. */
async function follow(client: Client, runId: string, asJson = false): Promise<RunResult> {
  const result = await watchRun(client, runId);
  const report = await saveReport(result);
  if (asJson) printJson({ ...result, ...(report ? { reportPath: report } : {}) });
  else console.log(summaryTable(result, report));
  return result;
}

/** One run's life: start it, follow it, look at it, stop it, audit it, fetch its report, resume it. */
export function addRunCommands(p: Command): void {
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
      if (o.json) return printJson(s);
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
      if (o.json) printJson(runs);
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
      if (o.json) printJson(a);
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
}
