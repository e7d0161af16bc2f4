import { Command } from 'commander';
import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { connect, runStatus } from '../client';
import { validateAll } from '../config';
import { TASK_QUEUE, type RunInput } from '../schemas/run';
import { selfLearning } from '../workflows';
import { UsageError } from './exit';
import { printJson, table } from './output';

/** Recurring runs as Temporal schedules. Each run reads and validates today's config and data again. */
export function scheduleCommand(): Command {
  const sched = new Command('schedule').description('recurring runs (Temporal schedules); each run re-reads the config and the data');
  sched
    .command('create')
    .argument('<id>', 'schedule id')
    .argument('<config>')
    .option('--cron <expr>', 'cron expression, e.g. "0 3 * * 1"')
    .option('--every <interval>', 'interval, e.g. 24h')
    .option('--tz <zone>', 'time zone of the cron expression (IANA, e.g. Europe/Paris)', 'UTC')
    .option('--pause-on-failure', 'pause the schedule when a run fails (default: go on, the next run retries)')
    .action(async (id: string, config: string, o) => {
      if (!o.cron === !o.every) throw new UsageError('give exactly one of --cron or --every');
      // Checked now for a clear error today; every run checks again, so a file broken later fails only that run.
      const v = await validateAll(config);
      const input: RunInput = { configFile: v.file, store: v.store };
      const client = await connect();
      await client.schedule.create({
        scheduleId: id,
        spec: o.cron ? { cronExpressions: [o.cron], timezone: o.tz } : { intervals: [{ every: o.every }], timezone: o.tz },
        // A run still going when the next is due is not doubled up: the next waits.
        policies: { overlap: ScheduleOverlapPolicy.BUFFER_ONE, pauseOnFailure: Boolean(o.pauseOnFailure) },
        action: {
          type: 'startWorkflow',
          workflowType: selfLearning,
          taskQueue: TASK_QUEUE,
          workflowId: `${v.config.name}-scheduled`,
          args: [input],
          staticSummary: `slearn ${v.config.name} (schedule ${id})`,
          memo: { config: v.config.name, stage: 'queued', schedule: id },
        },
      });
      console.log(`schedule ${id} created: ${o.cron ? `cron "${o.cron}" (${o.tz})` : `every ${o.every}`}${o.pauseOnFailure ? ', pauses on failure' : ''}`);
    });
  sched
    .command('list')
    .option('--json', 'machine-readable')
    .action(async (o) => {
      const client = await connect();
      const rows = [];
      for await (const s of client.schedule.list())
        rows.push({ id: s.scheduleId, paused: s.state.paused, next: s.info.nextActionTimes?.[0]?.toISOString() ?? null });
      if (o.json) return printJson(rows);
      const t = table(['schedule', 'state', 'next run']);
      for (const r of rows) t.push([r.id, r.paused ? 'paused' : 'active', r.next ?? '-']);
      console.log(rows.length ? t.toString() : 'no schedules');
    });
  sched
    .command('describe')
    .argument('<id>')
    .option('--json', 'machine-readable')
    .description('the schedule, and its last runs with their outcome and promotion decision')
    .action(async (id: string, o) => {
      const info = await describeSchedule(await connect(), id);
      if (o.json) return printJson(info);
      console.log(
        `schedule ${id}: ${info.paused ? `paused${info.note ? ` (${info.note})` : ''}` : 'active'}; next run ${info.next[0] ?? '-'}${info.pauseOnFailure ? '; pauses on failure' : ''}`,
      );
      const t = table(['run', 'started', 'status', 'outcome', 'reason']);
      for (const r of info.runs) t.push([r.runId, r.takenAt.slice(0, 19).replace('T', ' '), r.status.toLowerCase(), r.outcome, r.reason.slice(0, 90)]);
      console.log(info.runs.length ? t.toString() : 'no runs yet');
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
  return sched;
}

/** A schedule's state and its last ten runs, each with its outcome and the reason for it. */
async function describeSchedule(client: Client, id: string) {
  const d = await client.schedule.getHandle(id).describe();
  const runs = [];
  for (const a of d.info.recentActions.slice(-10)) {
    const runId = a.action.workflow.workflowId;
    let unreadable = '';
    const s = await runStatus(client, runId).catch((e: Error) => void (unreadable = `its status cannot be read: ${e.message}`));
    runs.push({
      runId,
      takenAt: a.takenAt.toISOString(),
      status: s?.status ?? 'unknown',
      outcome:
        s?.result?.status === 'nothing-new'
          ? 'nothing new'
          : s?.result?.promotion
            ? s.result.promotion.promoted
              ? 'promoted'
              : 'refused'
            : (s?.progress?.stage ?? s?.failure ?? ''),
      reason: s?.result?.promotion?.reason ?? s?.result?.reason ?? s?.failure ?? unreadable,
    });
  }
  return {
    id,
    paused: d.state.paused,
    note: d.state.note,
    spec: d.spec,
    pauseOnFailure: d.policies.pauseOnFailure,
    next: d.info.nextActionTimes.map((t) => t.toISOString()),
    runs,
  };
}
