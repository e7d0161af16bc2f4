// Does the method earn its keep? One self-learning run of a config answers and grades every item
// once; then each arm of an experiment file trains on a different selection or with other settings
// (a `variant` run reusing those answers), optionally beside a seeded random subset of the same
// size, and every model is evaluated on the same held-out items and the same fixed retention set.
// Prints a markdown table (and writes it beside the runs) with McNemar against the random subset of
// equal size, against the base, retention, training steps and time, and the wall time.
//   npx tsx bench/method.ts bench/sciq/method.yaml
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
import { tunedCorrect } from '../src/cli/compare';
import { watchRun } from '../src/cli/watch';
import { startEmbeddedStack } from '../src/demo';
import { mergePatch } from '../src/config';
import { mcnemar, pct } from '../src/metrics';
import { STATE_DIR } from '../src/paths';
import type { Baseline, RunResult } from '../src/schemas/run';
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

const mins = (s: number) => `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;

async function versus(a: RunResult, b: RunResult): Promise<{ fixed: number; broken: number; p: number } | undefined> {
  const ca = await tunedCorrect(a);
  const cb = await tunedCorrect(b);
  if (!ca || !cb) return undefined;
  let fixed = 0;
  let broken = 0;
  for (const [id, ok] of ca) {
    const other = cb.get(id);
    if (other === undefined) continue;
    if (ok && !other) fixed++;
    if (!ok && other) broken++;
  }
  return { fixed, broken, p: mcnemar(fixed, broken) };
}

function line(label: string, r: RunResult, wall: number, vsRandom: string, vsBase: string): string {
  const t = r.evaluation?.tuned;
  const ret = r.evaluation?.retention;
  return [
    label,
    String((r.filter?.kept ?? 0) + (r.filter?.replayed ?? 0)),
    String(r.train?.steps ?? 0),
    r.train ? mins(r.train.trainSeconds) : '–',
    t ? `${pct(t.accuracy)} (${pct(t.low)}–${pct(t.high)}), ${t.correct}/${t.total}` : '–',
    vsRandom,
    vsBase,
    ret ? `${pct(ret.accuracy)} (${ret.correct}/${ret.total})` : '–',
    mins(wall),
  ].join(' | ');
}

async function main() {
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
    };
    const first = await run(exp.label, {});
    const levels = first.result.levels;
    await withRandom(first, exp.random, {}, first.result.runId);
    for (const arm of exp.arms) {
      const row = await run(arm.label, arm.overrides, { kind: 'variant', label: arm.label }, first.result.runId);
      await withRandom(row, arm.random, arm.overrides, first.result.runId);
    }
    const ev = first.result.evaluation!;
    const lines = [
      `${exp.label}: ${first.result.counts.items} items answered, levels ${
        levels
          ? Object.entries(levels)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')
          : 'n/a'
      }; ` +
        `${ev.items} held-out items, base ${pct(ev.base.accuracy)} (${ev.base.correct}/${ev.base.total}); retention set ${first.result.evaluation?.retention?.total ?? 0} items`,
      '',
      '| selection | trained items | steps | train time | held-out accuracy (95% CI) | vs random of the same size: fixed / broken, McNemar p | vs base: fixed / broken, p | retention (fixed set) | wall |',
      '|---|---:|---:|---:|---|---|---|---:|---:|',
    ];
    lines.push(
      `| base (no tuning) | 0 | 0 | – | ${pct(ev.base.accuracy)} (${pct(ev.base.low)}–${pct(ev.base.high)}), ${ev.base.correct}/${ev.base.total} | – | – | 100% by definition | – |`,
    );
    for (const row of rows) {
      const vr = row.random ? await versus(row.result, row.random.result) : undefined;
      const vb = row.result.evaluation?.vsReference;
      const vbText = vb ? `${vb.fixed} / ${vb.broken}, p = ${vb.pValue.toPrecision(2)}` : '–';
      lines.push(`| ${line(row.label, row.result, row.wallSeconds, vr ? `${vr.fixed} / ${vr.broken}, p = ${vr.p.toPrecision(2)}` : '–', vbText)} |`);
      if (row.random) {
        const rb = row.random.result.evaluation?.vsReference;
        lines.push(
          `| ${line(`↳ ${row.random.label}`, row.random.result, row.random.wallSeconds, '', rb ? `${rb.fixed} / ${rb.broken}, p = ${rb.pValue.toPrecision(2)}` : '–')} |`,
        );
      }
    }
    lines.push(
      '',
      `Whole experiment: ${mins((Date.now() - t0) / 1000)} (\`npx tsx bench/method.ts ${process.argv[2] ?? 'bench/sciq/method.yaml'}\`); runs in ${out}.`,
    );
    const text = lines.join('\n');
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
