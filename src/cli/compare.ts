import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import type { Client } from '@temporalio/client';
import { startRun } from '../client';
import { confusion, mcnemar, pct } from '../metrics';
import type { EvalItemResult } from '../schemas/results';
import { renderComparison } from '../report/render';
import type { ComparisonData } from '../report/data';
import type { Baseline, RunResult } from '../schemas/run';
import { openStore } from '../store/open';
import { table } from './output';
import { localRunDir } from './reports';
import { watchRun } from './watch';

export type BaselineKind = 'full' | 'random';

export function compareCommandOption(): Option {
  return new Option('--compare <baselines>', 'also train baselines on the same answered items and compare: full, random, or full,random').argParser((v) => {
    const kinds = v.split(',').map((s) => s.trim());
    for (const k of kinds) if (k !== 'full' && k !== 'random') throw new InvalidArgumentError(`unknown baseline "${k}": use full, random or full,random`);
    return [...new Set(kinds)] as BaselineKind[];
  });
}

/** The baseline a kind stands for, sized like the self-learning run's training set. */
export function baselineFor(kind: BaselineKind, self: RunResult): Baseline {
  return kind === 'full' ? { kind } : { kind, size: (self.filter?.kept ?? 0) + (self.filter?.replayed ?? 0), seed: 0 };
}

export async function tunedCorrect(r: RunResult): Promise<Map<string, boolean> | undefined> {
  if (!r.evaluation?.tuned) return undefined;
  const store = await openStore(r.store);
  const out = new Map<string, boolean>();
  for await (const x of store.jsonl<EvalItemResult>(r.evaluation.results)) if (x.answers.tuned?.status === 'graded') out.set(x.id, x.answers.tuned.correct);
  return out;
}

/** Two tuned models on the held-out items both graded: fixed = right for `a` only, broken = right for `b` only, McNemar. */
export function pairedTuned(a: Map<string, boolean>, b: Map<string, boolean>): { fixed: number; broken: number; pValue: number } {
  const t = confusion([...a].flatMap(([id, ok]) => (b.has(id) ? [[ok, b.get(id)!] as const] : [])));
  return { fixed: t.onlyA, broken: t.onlyB, pValue: mcnemar(t.onlyA, t.onlyB) };
}

/** Self-learning against baselines on the same held-out items: accuracy, paired McNemar test, training time, retention. */
export async function comparison(self: RunResult, others: { label: string; result: RunResult }[]): Promise<ComparisonData> {
  const mine = await tunedCorrect(self);
  const row = async (label: string, r: RunResult): Promise<ComparisonData['rows'][number]> => {
    const theirs = r === self ? undefined : await tunedCorrect(r);
    const vsSelf = mine && theirs ? pairedTuned(theirs, mine) : undefined;
    return {
      label,
      runId: r.runId,
      trainedItems: (r.filter?.kept ?? 0) + (r.filter?.replayed ?? 0),
      steps: r.train?.steps ?? 0,
      trainSeconds: r.train?.trainSeconds ?? 0,
      ...(r.evaluation?.tuned ? { tuned: r.evaluation.tuned } : {}),
      ...(r.evaluation?.retention ? { retention: r.evaluation.retention } : {}),
      ...(vsSelf ? { vsSelf } : {}),
    };
  };
  return {
    title: `Self-learning vs ${others.map((o) => o.label).join(' and ')}`,
    rows: [await row('self-learning', self), ...(await Promise.all(others.map((o) => row(o.label, o.result))))],
    base: self.evaluation!.base,
    items: self.evaluation!.items,
  };
}

/** Starts the baselines after a self-learning run (reusing its answers and grades), waits, and writes the comparison. */
export async function runComparison(
  client: Client,
  configFile: string,
  self: RunResult,
  kinds: BaselineKind[],
  opts: { overrides?: Record<string, unknown> },
): Promise<ComparisonData> {
  const others: { label: string; result: RunResult }[] = [];
  for (const kind of kinds) {
    console.error(`\n--compare ${kind}: the same answered items, trained as a ${kind} baseline…`);
    const h = await startRun(client, configFile, {
      reuseFrom: [self.runId],
      baseline: baselineFor(kind, self),
      checkEndpoint: false,
      ...(opts.overrides ? { overrides: opts.overrides } : {}),
    });
    others.push({ label: kind === 'full' ? 'full fine-tuning' : 'random subset', result: await watchRun(client, h.workflowId) });
  }
  const data = await comparison(self, others);
  const { markdown, html } = renderComparison(data);
  const dir = localRunDir(self.runId);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'compare.md'), markdown);
  await writeFile(join(dir, 'compare.html'), html);
  const t = table(['', 'trained items', 'steps', 'train s', 'tuned accuracy', 'retention', 'vs self-learning (fixed/broken, p)']);
  for (const r of data.rows) {
    t.push([
      r.label,
      String(r.trainedItems),
      String(r.steps),
      r.trainSeconds.toFixed(1),
      r.tuned ? `${pct(r.tuned.accuracy)} [${pct(r.tuned.low)}, ${pct(r.tuned.high)}]` : 'n/a',
      r.retention ? pct(r.retention.accuracy) : 'n/a',
      r.vsSelf ? `${r.vsSelf.fixed}/${r.vsSelf.broken}, p=${r.vsSelf.pValue.toPrecision(2)}` : '',
    ]);
  }
  console.log(
    `\n${data.title} (base ${pct(data.base.accuracy)} on ${data.items} held-out items)\n${t.toString()}\ncomparison report: ${join(dir, 'compare.html')}`,
  );
  return data;
}
