import { renderHtml, renderMarkdown, type ReportData } from '../report/render';
import type { Counts, EvalResult, FilterResult, LevelCounts, ModelUse, PromotionDecision, ReportResult, StepCtx, TrainResult } from '../schemas/run';
import { fingerprint, once } from '../store/steps';
import type { DecisionRecord, EvalItemResult } from '../schemas/results';
import type { StepEnv } from './env';
import { runConfig } from './step';

export interface ReportInput {
  ctx: StepCtx;
  counts: Counts;
  levels?: LevelCounts;
  current?: ModelUse | null;
  filter?: FilterResult;
  train?: TrainResult;
  evaluation?: EvalResult;
  promotion?: PromotionDecision;
  notices?: string[];
  reason?: string;
}

/** Most items listed in the report's table: a million-item run gets a readable page, not a 1 GB one. */
export const REPORT_ITEMS = 2000;

/** The run's report as blobs in the store: markdown for terminals, a self-contained HTML page for browsers. */
export async function report(env: StepEnv, input: ReportInput): Promise<ReportResult> {
  const { ctx } = input;
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  const fp = fingerprint('report', input);
  return once(
    store,
    ctx,
    'report',
    fp,
    input.evaluation ? { results: input.evaluation.results } : {},
    async () => {
      const losses = input.train?.losses ? await store.jsonlAll<{ step: number; loss: number }>(input.train.losses) : [];
      const results: EvalItemResult[] = [];
      if (input.evaluation) for await (const r of store.jsonl<EvalItemResult>(input.evaluation.results)) if (results.length < REPORT_ITEMS) results.push(r);
      const decisions: DecisionRecord[] = [];
      if (input.filter) for await (const d of store.jsonl<DecisionRecord>(input.filter.decisions)) if (decisions.length < REPORT_ITEMS) decisions.push(d);
      const data: ReportData = {
        runId: ctx.runId,
        name: config.name,
        counts: input.counts,
        ...(input.levels ? { levels: input.levels } : {}),
        ...(input.filter ? { filter: input.filter } : {}),
        ...(input.train ? { train: input.train } : {}),
        ...(input.evaluation ? { evaluation: input.evaluation } : {}),
        ...(input.promotion ? { promotion: input.promotion } : {}),
        ...(input.current ? { current: input.current } : {}),
        notices: input.notices ?? [],
        ...(input.reason ? { reason: input.reason } : {}),
        losses,
        results,
        decisions,
      };
      const markdown = await store.putBytes(renderMarkdown(data));
      const html = await store.putBytes(renderHtml(data));
      return { outputs: { markdown, html }, result: { markdown, html } };
    },
    env,
  );
}
