import * as colors from '@colors/colors/safe';
import Table from 'cli-table3';
import { pct } from '../metrics';
import { jsonText } from '../streams';
import type { Audit, RunListing, RunStatus } from '../client';
import { isTrainProgress, isWorkProgress } from '../schemas/progress';
import type { Accuracy, Progress, RunResult } from '../schemas/run';
import { cpuNotice } from '../report/summary';

/** A value as JSON on stdout, for `--json` (two-space indented). */
export function printJson(value: unknown): void {
  process.stdout.write(jsonText(value));
}

/** Colour and cursor tricks only on a terminal that wants them (NO_COLOR, pipes and CI logs get plain text). */
export function fancy(stream: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(stream.isTTY) && !('NO_COLOR' in env) && env.TERM !== 'dumb';
}

/** Columns to fit tables into: the terminal's width, else COLUMNS, else 120 (a CI log reads well at that). */
export function outputWidth(stream: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env): number {
  return (stream.isTTY && stream.columns) || Number(env.COLUMNS) || 120;
}

export function table(head: string[], width = outputWidth()): Table.Table {
  const plain = !fancy();
  // cli-table3 colours through @colors/colors, which guesses for itself (it turns colour off wherever CI is set,
  // even on a terminal): the decision is made once, here, for the tables as for the progress bars.
  if (plain) colors.disable();
  else colors.enable();
  const t = new Table({ head, style: plain ? { head: [], border: [] } : {} });
  // Free text (a promotion's reason, a failure's message) would stretch a row past the screen: fit the
  // columns when the table is drawn, when all its rows are known.
  const draw = t.toString.bind(t);
  t.toString = () => {
    fitColumns(t, head, width);
    return draw();
  };
  return t;
}

const NARROWEST = 12;

/**
 * Narrows the widest columns until the table fits `width`; their cells wrap at words, and a word longer
 * than its column (a path, an id) is broken across lines rather than cut short.
 */
function fitColumns(t: Table.Table, head: string[], width: number): void {
  type Cell = string | number | null | undefined;
  const rows = t as unknown as Cell[][];
  const lines = (c: Cell) => colors.strip(String(c ?? '')).split('\n');
  // Each cell has one space of padding on either side; each column a border to its left, the last one to its right too.
  const natural = head.map((h, i) => Math.max(...[h, ...rows.map((r) => r[i])].map((c) => Math.max(...lines(c).map((l) => l.length)))) + 2);
  const widths = [...natural];
  let total = widths.reduce((a, b) => a + b, 0) + head.length + 1;
  if (total <= width) return;
  while (total > width) {
    const widest = widths.indexOf(Math.max(...widths));
    if (widths[widest] <= NARROWEST) break;
    widths[widest] -= 1;
    total -= 1;
  }
  widths.forEach((w, i) => {
    if (w === natural[i]) return;
    const inner = w - 2;
    const breakLong = (word: string) => (word.length <= inner ? word : (word.match(new RegExp(`.{1,${inner}}`, 'g')) ?? []).join('\n'));
    for (const r of rows)
      if (typeof r[i] === 'string')
        r[i] = lines(r[i])
          .map((l) => l.split(' ').map(breakLong).join(' '))
          .join('\n');
  });
  t.options.colWidths = widths;
  t.options.wordWrap = true;
  t.options.wrapOnWordBoundary = true;
}

const ci = (a: Accuracy) => `${pct(a.accuracy)}  [${pct(a.low)}, ${pct(a.high)}]  (${a.correct}/${a.total})`;

export function summaryTable(r: RunResult, reportPath?: string, width = outputWidth()): string {
  const t = table(['', 'value'], width);
  t.push(['run', r.runId], ['items answered and graded', String(r.counts.items)]);
  if (r.status === 'nothing-new') {
    t.push(['outcome', r.reason ?? 'nothing new']);
    return t.toString();
  }
  if (r.levels)
    t.push(['known / maybe known / weakly known / unknown', `${r.levels.known} / ${r.levels.maybeKnown} / ${r.levels.weaklyKnown} / ${r.levels.unknown}`]);
  if (r.filter) {
    t.push(['dropped (already known)', String(r.filter.dropped)], ['trained on', String(r.filter.kept)]);
    if (r.filter.replayed) t.push(['replayed known', String(r.filter.replayed)]);
    const a = r.filter.agreement;
    if (a) t.push(['judge vs rule grader', a.words]);
  }
  t.push(['ungradeable', String(r.counts.ungradeable)]);
  if (r.train) {
    const rt = r.train.runtime;
    const where = rt?.device ? ` on ${rt.device}${rt.precision ? ` ${rt.precision}` : ''}${rt.host ? ` (${rt.host})` : ''}` : '';
    t.push([
      'training',
      r.train.skipped
        ? 'skipped (nothing to learn)'
        : `${r.train.steps} steps, ${r.train.trainSeconds.toFixed(1)} s${where}${r.train.resumedFromStep ? `, resumed from step ${r.train.resumedFromStep}` : ''}`,
    ]);
    const cpu = r.train.skipped ? undefined : cpuNotice(rt);
    if (cpu) t.push(['notice', cpu]);
  }
  const e = r.evaluation;
  if (e) {
    t.push([`base accuracy (${e.items} held-out items, 95% CI)`, ci(e.base)]);
    if (e.current) t.push(['current model accuracy', ci(e.current)]);
    if (e.tuned) t.push(['tuned accuracy', ci(e.tuned)]);
    if (e.vsReference)
      t.push([`fixed / broken vs ${e.vsReference.a}`, `${e.vsReference.fixed} / ${e.vsReference.broken}  (McNemar p=${e.vsReference.pValue.toPrecision(2)})`]);
    if (e.retention) t.push(['retention of known items', ci(e.retention)]);
  }
  if (r.promotion) t.push(['promotion', r.promotion.reason]);
  // The report's path goes below the table, whole on its own line: broken across a cell's lines it could
  // not be copied or clicked, and a deep home (or temporary) directory made it longer than its column.
  return reportPath ? `${t.toString()}\nreport: ${reportPath}` : t.toString();
}

/** Share done per stage, from the workflow's counts and the running activities' heartbeats. */
export function stageProgress(s: RunStatus): { stage: string; done: number; total: number; detail: string } {
  const p = s.progress;
  const stage = p?.stage ?? 'starting';
  const work = s.pending.map((a) => a.progress).filter(isWorkProgress);
  const train = s.pending.map((a) => a.progress).find(isTrainProgress);
  if (p && stage === 'answer-grade') {
    const finished = p.counts.graded + p.counts.ungradeable;
    const shards = work.filter((w) => w.phase.startsWith('answer-grade'));
    const inFlight = shards.reduce((n, w) => n + w.done, 0);
    const known = p.counts.known + shards.reduce((n, w) => n + (w.known ?? 0), 0);
    const unknown = p.counts.unknown + shards.reduce((n, w) => n + (w.unknown ?? 0), 0);
    return { stage, done: finished + inFlight, total: p.counts.items, detail: `known ${known} · unknown ${unknown}` };
  }
  if (stage === 'train' && train) {
    const eta = train.stepsPerSecond ? ` · ETA ${Math.round((train.totalSteps - train.step) / train.stepsPerSecond)}s` : '';
    const loss = train.loss !== undefined ? ` · loss ${train.loss.toFixed(3)}` : '';
    const where = train.device ? ` · ${train.device}${train.host ? `@${train.host}` : ''}` : '';
    return { stage, done: train.step, total: train.totalSteps, detail: `step ${train.step}/${train.totalSteps}${loss}${eta}${where}` };
  }
  if (stage === 'evaluate' && work.length) {
    const done = work.reduce((n, w) => n + w.done, 0);
    const total = work.reduce((n, w) => n + w.total, 0);
    return { stage, done, total, detail: work.map((w) => `${w.phase} ${w.done}/${w.total}`).join(' · ') };
  }
  return { stage, done: 0, total: 0, detail: '' };
}

export function progressLine(s: RunStatus): string {
  const p: Progress | undefined = s.progress;
  if (!p) return `${s.runId}: ${s.status.toLowerCase()}${s.unreadable?.length ? ` (${s.unreadable.join('; ')})` : ''}`;
  const sp = stageProgress(s);
  const parts = [`stage ${sp.stage}`];
  if (sp.total) parts.push(`${sp.done}/${sp.total}`);
  if (sp.detail) parts.push(sp.detail);
  parts.push(`shards ${p.shardsDone}/${p.shardsTotal}`);
  if (p.counts.ungradeable) parts.push(`ungradeable ${p.counts.ungradeable}`);
  if (p.current) parts.push(`from version ${p.current.version}`);
  if (p.continuedAsNew) parts.push(`continued-as-new ${p.continuedAsNew}×`);
  const retrying = s.pending.filter((a) => a.attempt > 1);
  if (retrying.length)
    parts.push(`retrying: ${retrying.map((a) => `${a.activity} (attempt ${a.attempt}${a.lastFailure ? `: ${a.lastFailure.slice(0, 60)}` : ''})`).join(', ')}`);
  const asking = s.pending
    .map((a) => a.progress)
    .filter(isWorkProgress)
    .filter((w) => w.retries > 0);
  if (asking.length)
    parts.push(
      `asked again: ${asking.reduce((n, w) => n + w.retries, 0)} requests${asking.find((w) => w.lastError) ? ` (last: ${asking.find((w) => w.lastError)!.lastError!.slice(0, 60)})` : ''}`,
    );
  return parts.join(' | ');
}

export function listTable(runs: RunListing[]): string {
  const t = table(['run', 'status', 'started', 'stage', 'known', 'unknown', 'accuracy', 'promoted']);
  for (const r of runs) {
    t.push([
      r.baseline ? `${r.runId} (${r.baseline})` : r.runId,
      r.status.toLowerCase(),
      r.started.slice(0, 19).replace('T', ' '),
      r.stage ?? '',
      r.known !== undefined ? String(r.known) : '',
      r.unknown !== undefined ? String(r.unknown) : '',
      r.accuracy !== undefined ? pct(r.accuracy) : '',
      r.promoted === undefined ? '' : r.promoted ? 'yes' : 'no',
    ]);
  }
  return t.toString();
}

export function auditText(a: Audit): string {
  const out: string[] = [`workflow ${a.workflowId}: ${a.runs.length} execution(s) in its continue-as-new chain`];
  for (const run of a.runs) {
    out.push('', `execution ${run.executionRunId}: ${run.status}, ${run.events} history events${run.continuedAsNew ? ', continued as new' : ''}`);
    const t = table(['scheduled', 'activity', 'input', 'attempts', 'duration', 'outcome', 'failure / last retry cause']);
    const notes: string[] = [];
    for (const x of run.activities) {
      const why = x.failure ?? x.lastFailure ?? '';
      // Long messages (a dataset's FILE:LINE list) go below the table, whole.
      if (why.length > 80) notes.push(`[${notes.length + 1}] ${x.activity} ${x.input}: ${why}`);
      t.push([
        x.scheduled.slice(11, 23),
        x.activity,
        x.input,
        String(x.attempts),
        x.durationMs !== undefined ? `${(x.durationMs / 1000).toFixed(2)}s` : '',
        x.outcome,
        why.length > 80 ? `${why.slice(0, 70)}… [${notes.length}]` : why,
      ]);
    }
    out.push(t.toString(), ...notes);
    if (run.failure) out.push(`the run failed: ${run.failure}`);
  }
  const r = a.result;
  if (r?.train?.runtime) out.push('', `trained on: ${JSON.stringify(r.train.runtime)}`);
  if (r?.promotion) {
    const p = r.promotion;
    out.push(
      '',
      `promotion: ${p.promoted ? 'promoted' : 'not promoted'}${p.version ? ` (version ${p.version})` : ''}${p.gain !== undefined ? `, gain ${(p.gain * 100).toFixed(1)} points` : ''}${p.forgetting !== undefined ? `, forgetting ${pct(p.forgetting)}` : ''}`,
      `  ${p.reason}`,
    );
  }
  out.push('', 'artifact lineage (step: inputs -> outputs):');
  for (const s of a.lineage) {
    const refs = (r: Record<string, { sha256: string; count?: number }>) =>
      Object.entries(r)
        .map(([k, v]) => `${k}=${v.sha256.slice(0, 12)}${v.count !== undefined ? `(${v.count})` : ''}`)
        .join(' ');
    out.push(`  ${s.step.padEnd(22)} ${refs(s.inputs)} -> ${refs(s.outputs)}${s.reusedFrom ? `  [reused from ${s.reusedFrom}]` : ''}`);
  }
  return out.join('\n');
}
