import Table from 'cli-table3';
import { pct } from '../metrics';
import type { Audit } from '../client';
import type { Accuracy, Progress, RunResult } from '../schemas/run';

const ci = (a: Accuracy) => `${pct(a.accuracy)}  [${pct(a.low)}, ${pct(a.high)}]  (${a.correct}/${a.total})`;

export function summaryTable(r: RunResult): string {
  const t = new Table({ head: ['', 'value'] });
  t.push(
    ['run', r.runId],
    ['items', String(r.counts.items)],
    ['known (dropped)', String(r.filter.dropped)],
    ['unknown (trained on)', String(r.filter.kept)],
    ['replayed known', String(r.filter.replayed)],
    ['ungradeable', String(r.counts.ungradeable)],
    ['training', r.train.skipped ? 'skipped (nothing unknown)' : `${r.train.steps} steps, ${r.train.trainSeconds.toFixed(1)} s${r.train.resumedFromStep ? `, resumed from step ${r.train.resumedFromStep}` : ''}`],
    [`base accuracy (${r.evaluation.items} eval items, 95% CI)`, ci(r.evaluation.base)],
  );
  if (r.evaluation.tuned) t.push(['tuned accuracy (95% CI)', ci(r.evaluation.tuned)], ['fixed / broken by tuning', `${r.evaluation.fixed} / ${r.evaluation.broken}`]);
  t.push(['report', `${r.report.dir}/report.html`]);
  return t.toString();
}

export function progressLine(p: Progress): string {
  const c = p.counts;
  const parts = [`stage ${p.stage}`, `shards ${p.shardsDone}/${p.shardsTotal}`, `items ${c.graded + c.ungradeable}/${c.items}`, `known ${c.known}`, `unknown ${c.unknown}`];
  if (c.ungradeable) parts.push(`ungradeable ${c.ungradeable}`);
  if (p.train) parts.push(`step ${p.train.step}/${p.train.totalSteps}${p.train.loss !== undefined ? ` loss ${p.train.loss.toFixed(3)}` : ''}`);
  const elapsed = (Date.now() - p.startedAt) / 1000;
  const done = p.shardsTotal ? p.shardsDone / p.shardsTotal : 0;
  if (p.stage === 'answer-grade' && done > 0 && done < 1) parts.push(`ETA ${Math.round((elapsed / done) * (1 - done))}s (answering)`);
  if (p.stage === 'train' && p.train?.totalSteps && p.train.stepsPerSecond) {
    parts.push(`ETA ${Math.round((p.train.totalSteps - p.train.step) / p.train.stepsPerSecond)}s (training)`);
  }
  if (p.continuedAsNew) parts.push(`continued-as-new ${p.continuedAsNew}×`);
  return parts.join(' | ');
}

export function auditText(a: Audit): string {
  const out: string[] = [`workflow ${a.workflowId}: ${a.runs.length} run(s) in its continue-as-new chain`];
  for (const run of a.runs) {
    out.push('', `run ${run.runId}: ${run.status}, ${run.events} history events${run.continuedAsNew ? ', continued as new' : ''}`);
    const t = new Table({ head: ['scheduled', 'activity', 'input', 'attempts', 'duration', 'outcome', 'failure / last retry cause'] });
    for (const x of run.activities) {
      t.push([x.scheduled.slice(11, 23), x.activity, x.input, String(x.attempts), x.durationMs !== undefined ? `${(x.durationMs / 1000).toFixed(2)}s` : '', x.outcome, (x.failure ?? x.lastFailure ?? '').slice(0, 80)]);
    }
    out.push(t.toString());
  }
  out.push('', 'artifact lineage (step: inputs -> outputs):');
  for (const s of a.lineage) {
    const refs = (r: Record<string, { sha256: string; count?: number }>) =>
      Object.entries(r)
        .map(([k, v]) => `${k}=${v.sha256.slice(0, 12)}${v.count !== undefined ? `(${v.count})` : ''}`)
        .join(' ');
    out.push(`  ${s.step.padEnd(14)} ${refs(s.inputs)} -> ${refs(s.outputs)}${s.reusedFrom ? `  [reused from ${s.reusedFrom}]` : ''}`);
  }
  return out.join('\n');
}
