import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { atomicWrite, runKey } from '../artifacts/store';
import { renderHtml, renderMarkdown, type ReportData } from '../report/render';
import type { Counts, EvalResult, FilterResult, ReportResult, TrainResult } from '../schemas/run';
import type { EvalItemResult } from './evaluate';
import { fingerprint, onceper, openStep, type StepCtx } from './context';

export interface ReportInput {
  ctx: StepCtx;
  counts: Counts;
  filter: FilterResult;
  train: TrainResult;
  evaluation: EvalResult;
  compare?: ReportData['compare'];
}

/** Where people look: <store>/../runs/<run id>/report.{md,html} (by default .slearn/runs/<run id>/). */
export function reportDir(root: string, runId: string): string {
  return join(dirname(root), 'runs', runKey(runId));
}

/** Writes the run's report, markdown for reading in a terminal and HTML with charts for a browser. */
export async function report(input: ReportInput): Promise<ReportResult> {
  const { ctx } = input;
  const { store, config } = openStep(ctx);
  const fp = fingerprint('report', input.counts, input.filter, input.train, input.evaluation, input.compare ?? null);
  return onceper(store, ctx, 'report', fp, { results: input.evaluation.results }, async () => {
    const losses = input.train.losses ? store.readJsonl<{ step: number; loss: number }>(input.train.losses) : [];
    const results = store.readJsonl<EvalItemResult>(input.evaluation.results);
    const examples = [...results.filter((r) => r.delta === 'fixed'), ...results.filter((r) => r.delta === 'broken'), ...results.filter((r) => r.delta === 'both-wrong')]
      .slice(0, 12)
      .map((r) => ({ question: r.question, reference: r.reference, base: r.base.answer, tuned: r.tuned?.answer, delta: r.delta }));
    const data: ReportData = { runId: ctx.runId, name: config.name, counts: input.counts, filter: input.filter, train: input.train, evaluation: input.evaluation, losses, examples, compare: input.compare };
    const markdown = store.writeBytes(renderMarkdown(data));
    const html = store.writeBytes(renderHtml(data));
    const dir = reportDir(store.root, ctx.runId);
    mkdirSync(dir, { recursive: true });
    atomicWrite(join(dir, 'report.md'), store.readText(markdown));
    atomicWrite(join(dir, 'report.html'), store.readText(html));
    return { outputs: { markdown, html }, result: { markdown, html, dir } };
  });
}
