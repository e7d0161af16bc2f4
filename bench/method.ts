// Does the method earn its keep? One self-learning run of a config answers and grades every item
// once; then each arm of an experiment file trains on a different selection or with other settings
// (a `variant` run reusing those answers), optionally beside a seeded random subset of the same
// size, and every model is evaluated on the same held-out items and the same fixed retention set.
// Prints a markdown table (and writes it beside the runs) with McNemar against the random subset of
// equal size, against the base, retention (also by the level the item had), training steps and
// time, and the wall time.
//   npx tsx bench/method.ts bench/sciq/levels.method.yaml
//   npx tsx bench/method.ts --table .slearn/bench/method-<time>     # the table of a finished (or stopped) one
// The experiment file:
//   config: slearn.yaml          # relative to the experiment file; its own settings are the first arm
//   label: self-learning (default)
//   random: true                 # also a random subset of the first arm's size
//   arms:
//     - { label: unknown only, overrides: { filter: { trainOn: [unknown] } }, random: true }
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { startRun } from '../src/client';
import { pairedTuned, tunedCorrect } from '../src/cli/compare';
import { watchRun } from '../src/cli/watch';
import { startEmbeddedStack } from '../src/demo';
import { mergePatch } from '../src/config';
import { pct } from '../src/metrics';
import { duration } from '../src/report/format';
import { STATE_DIR } from '../src/paths';
import type { DecisionRecord, ItemGrade } from '../src/schemas/results';
import type { Baseline, RunResult } from '../src/schemas/run';
import { openStore } from '../src/store/open';
import { installLogger } from '../src/temporal/logging';

const ArmSchema = z.strictObject({
  label: z.string(),
  overrides: z.record(z.string(), z.unknown()).default({}),
  random: z.boolean().default(false),
});
const ExperimentSchema = z.strictObject({
  config: z.string(),
  label: z.string().default('self-learning (default)'),
  random: z.boolean().default(true),
  /** Settings for every run of the experiment (the first arm included), merged over the config. */
  overrides: z.record(z.string(), z.unknown()).default({}),
  arms: z.array(ArmSchema).default([]),
});

interface Row {
  label: string;
  result: RunResult;
  wallSeconds: number;
  /** The random subset of the same size, when one was trained. */
  random?: Row;
}

async function versus(a: RunResult, b: RunResult): Promise<{ fixed: number; broken: number; pValue: number } | undefined> {
  const ca = await tunedCorrect(a);
  const cb = await tunedCorrect(b);
  return ca && cb ? pairedTuned(ca, cb) : undefined;
}

function line(label: string, r: RunResult, wall: number, vsRandom: string, vsBase: string, byLevel: string, score: string): string {
  const t = r.evaluation?.tuned;
  const ret = r.evaluation?.retention;
  return [
    label,
    String((r.filter?.kept ?? 0) + (r.filter?.replayed ?? 0)),
    String(r.train?.steps ?? 0),
    r.train ? duration(r.train.trainSeconds) : '–',
    t ? `${pct(t.accuracy)} (${pct(t.low)}–${pct(t.high)}), ${t.correct}/${t.total}` : '–',
    score,
    vsRandom,
    vsBase,
    ret ? `${pct(ret.accuracy)} (${ret.correct}/${ret.total})` : '–',
    byLevel,
    duration(wall),
  ].join(' | ');
}

/** Retention of the tuned model on the fixed set, split by the level each item had when the set was drawn. */
async function retentionByLevel(r: RunResult, levelOf: Map<string, string>): Promise<string> {
  const pass = r.evaluation?.passes.find((p) => p.set === 'retention' && p.model.label === 'tuned');
  if (!pass) return '–';
  const store = await openStore(r.store);
  const by = new Map<string, { right: number; total: number }>();
  for await (const g of store.jsonl<ItemGrade>(pass.grades)) {
    const level = levelOf.get(g.id) ?? '?';
    const b = by.get(level) ?? { right: 0, total: 0 };
    b.total++;
    if (g.status === 'graded' && g.greedy?.correct) b.right++;
    by.set(level, b);
  }
  return [...by.entries()].map(([l, b]) => `${l} ${b.right}/${b.total}`).join(', ');
}

/**
 * Mean greedy score of a model on the held-out items (token F1 for the match grader). Where accuracy
 * sits at the floor (a small model on a domain it does not know), partial credit still moves.
 */
async function meanScore(r: RunResult, model: 'base' | 'tuned'): Promise<string> {
  const pass = r.evaluation?.passes.find((p) => p.set === 'eval' && p.model.label === model);
  if (!pass) return '–';
  const store = await openStore(r.store);
  let sum = 0;
  let n = 0;
  for await (const g of store.jsonl<ItemGrade>(pass.grades)) {
    n++;
    if (g.status === 'graded') sum += g.greedy?.score ?? 0;
  }
  return n ? (sum / n).toFixed(3) : '–';
}

const paired = (p?: { fixed: number; broken: number; pValue: number }) => (p ? `${p.fixed} / ${p.broken}, p = ${p.pValue.toPrecision(2)}` : '–');

/** The markdown table of an experiment: the first row's run gives the held-out set, the base and the levels. */
async function table(label: string, rows: Row[], whole: string): Promise<string> {
  const first = rows[0].result;
  const ev = first.evaluation!;
  const store = await openStore(first.store);
  const levelOf = new Map<string, string>();
  for await (const d of store.jsonl<DecisionRecord>(first.filter!.decisions)) if (d.level) levelOf.set(d.id, d.level);
  const levels = first.levels
    ? Object.entries(first.levels)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')
    : 'n/a';
  const lines = [
    `${label}: ${first.counts.items} items answered (levels: ${levels}); ${ev.items} held-out items, base ${pct(ev.base.accuracy)} ` +
      `(${ev.base.correct}/${ev.base.total}); fixed retention set of ${ev.retention?.total ?? 0} items`,
    '',
    '| selection | trained items | steps | train time | held-out accuracy (95% CI) | held-out mean score | vs random of the same size: fixed / broken, McNemar p | vs base: fixed / broken, p | retention (fixed set) | retention by level | wall |',
    '|---|---:|---:|---:|---|---:|---|---|---:|---|---:|',
    `| base (no tuning) | 0 | 0 | – | ${pct(ev.base.accuracy)} (${pct(ev.base.low)}–${pct(ev.base.high)}), ${ev.base.correct}/${ev.base.total} | ${await meanScore(first, 'base')} | – | – | 100% by definition | – | – |`,
  ];
  for (const row of rows) {
    const vr = row.random ? await versus(row.result, row.random.result) : undefined;
    lines.push(
      `| ${line(row.label, row.result, row.wallSeconds, paired(vr), paired(row.result.evaluation?.vsReference), await retentionByLevel(row.result, levelOf), await meanScore(row.result, 'tuned'))} |`,
    );
    if (row.random) {
      const r = row.random;
      lines.push(
        `| ${line(`↳ ${r.label}`, r.result, r.wallSeconds, '', paired(r.result.evaluation?.vsReference), await retentionByLevel(r.result, levelOf), await meanScore(r.result, 'tuned'))} |`,
      );
    }
  }
  lines.push('', `Whole experiment: ${whole}.`);
  return lines.join('\n');
}

async function main() {
  // --table DIR: the table of a finished experiment again, from its results.json
  if (process.argv[2] === '--table') {
    const dir = resolve(process.argv[3]);
    const saved = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { label: string; rows: Row[] };
    console.log(await table(saved.label, saved.rows, `runs in ${dir}`));
    return;
  }
  const file = resolve(process.argv[2] ?? 'bench/sciq/method.yaml');
  const exp = ExperimentSchema.parse(parse(readFileSync(file, 'utf8')));
  const configFile = resolve(dirname(file), exp.config);
  installLogger('WARN');
  const t0 = Date.now();
  const stack = await startEmbeddedStack();
  // A fresh store: the registry (its fixed retention set, "nothing new") starts empty for this experiment.
  const out = join(STATE_DIR, 'bench', `method-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });
  const common = mergePatch(exp.overrides, { model: { baseUrl: stack.baseUrl }, artifacts: join(out, 'artifacts') }) as Record<string, unknown>;
  const rows: Row[] = [];
  try {
    const run = async (label: string, overrides: Record<string, unknown>, baseline?: Baseline, reuse?: string): Promise<Row> => {
      const started = Date.now();
      console.error(`\n== ${label}`);
      const h = await startRun(stack.client, configFile, {
        overrides: mergePatch(common, overrides) as Record<string, unknown>,
        ...(baseline ? { baseline } : {}),
        ...(reuse ? { reuseFrom: [reuse], checkEndpoint: false } : {}),
      });
      const result = await watchRun(stack.client, h.workflowId);
      return { label, result, wallSeconds: (Date.now() - started) / 1000 };
    };
    const withRandom = async (row: Row, random: boolean, overrides: Record<string, unknown>, reuse: string) => {
      const size = (row.result.filter?.kept ?? 0) + (row.result.filter?.replayed ?? 0);
      if (random && size > 0) row.random = await run(`random subset, ${size} items`, overrides, { kind: 'random', size, seed: 0 }, reuse);
      rows.push(row);
      // after every arm: a stopped experiment keeps what it finished (`--table DIR` prints it)
      writeFileSync(join(out, 'results.json'), JSON.stringify({ label: exp.label, rows }, null, 1));
    };
    const first = await run(exp.label, {});
    await withRandom(first, exp.random, {}, first.result.runId);
    for (const arm of exp.arms) {
      const row = await run(arm.label, arm.overrides, { kind: 'variant', label: arm.label }, first.result.runId);
      await withRandom(row, arm.random, arm.overrides, first.result.runId);
    }
    const text = await table(exp.label, rows, `${duration((Date.now() - t0) / 1000)} (\`npx tsx bench/method.ts ${process.argv[2] ?? ''}\`); runs in ${out}`);
    writeFileSync(join(out, 'table.md'), text + '\n');
    console.log(`\n${text}`);
  } finally {
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
