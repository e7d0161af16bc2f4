// A chained run, as a schedule makes them: run 1 adapts the base on a seeded share of the dataset
// and is put in service; then the dataset grows to the whole, and run 2 adapts the model in service
// (it answers with version 1 and continues its adapter) under each arm's settings, e.g. a re-warmed
// learning rate with a little replay. Every run-2 arm reuses the same answers, starts from the same
// version 1, and is evaluated on the same held-out items and the config's fixed retention set (drawn
// by run 1). Prints a markdown table.
//   npx tsx bench/chain.ts bench/agriculture/chain.method.yaml
// The experiment file:
//   config: slearn.yaml
//   firstShare: 0.5                 # share of the dataset run 1 sees (seeded by item id)
//   overrides: { ... }              # for every run
//   arms:                           # run 2, each from version 1; the first is the reference
//     - { label: same settings, overrides: {} }
//     - { label: warm-up 10% + replay 10%, overrides: { train: { warmupRatio: 0.1 }, filter: { replayFraction: 0.1 } } }
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { startRun } from '../src/client';
import { watchRun } from '../src/cli/watch';
import { loadConfig, mergePatch } from '../src/config';
import { readDataset } from '../src/dataset/read';
import { startEmbeddedStack } from '../src/demo';
import { pct } from '../src/metrics';
import { duration } from '../src/report/format';
import { STATE_DIR } from '../src/paths';
import { draw } from '../src/pipeline/prepare';
import type { Baseline, RunResult } from '../src/schemas/run';
import { installLogger } from '../src/temporal/logging';

const ExperimentSchema = z.strictObject({
  config: z.string(),
  firstShare: z.number().gt(0).lt(1).default(0.5),
  overrides: z.record(z.string(), z.unknown()).default({}),
  arms: z.array(z.strictObject({ label: z.string(), overrides: z.record(z.string(), z.unknown()).default({}) })).min(1),
});

const acc = (a?: { accuracy: number; correct: number; total: number }) => (a ? `${pct(a.accuracy)} (${a.correct}/${a.total})` : '–');

async function main() {
  const file = resolve(process.argv[2] ?? 'bench/agriculture/chain.method.yaml');
  const exp = ExperimentSchema.parse(parse(readFileSync(file, 'utf8')));
  const configFile = resolve(dirname(file), exp.config);
  installLogger('WARN');
  const t0 = Date.now();
  const out = join(STATE_DIR, 'bench', `chain-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });

  // The two datasets: a seeded share of the items, then all of them (JSON Lines, so the columns mapping is not needed).
  const { config } = loadConfig(configFile, { overrides: exp.overrides });
  const { items } = await readDataset(config.dataset, config.columns ? { columns: config.columns } : {});
  const write = (name: string, rows: typeof items) => {
    const p = join(out, name);
    writeFileSync(p, rows.map((i) => JSON.stringify(i)).join('\n') + '\n');
    return p;
  };
  const firstFile = write(
    'first.jsonl',
    items.filter((i) => draw(0, i.id, 'chain') < exp.firstShare),
  );
  const allFile = write('all.jsonl', items);

  const stack = await startEmbeddedStack();
  const common = mergePatch(exp.overrides, { model: { baseUrl: stack.baseUrl }, artifacts: join(out, 'artifacts'), columns: null }) as Record<string, unknown>;
  const run = async (label: string, overrides: Record<string, unknown>, opts: { baseline?: Baseline; reuse?: string } = {}) => {
    const started = Date.now();
    console.error(`\n== ${label}`);
    const h = await startRun(stack.client, configFile, {
      overrides: mergePatch(common, overrides) as Record<string, unknown>,
      ...(opts.baseline ? { baseline: opts.baseline } : {}),
      ...(opts.reuse ? { reuseFrom: [opts.reuse], checkEndpoint: false } : {}),
    });
    return { label, result: await watchRun(stack.client, h.workflowId), wallSeconds: (Date.now() - started) / 1000 };
  };
  try {
    // Run 1 goes into service whatever the gate would say: the point is what run 2 does to it.
    const one = await run('run 1: the base on the first share', { dataset: firstFile, promote: { minGain: -1, maxForgetting: 1 } });
    const two: { label: string; result: RunResult; wallSeconds: number }[] = [];
    for (const [i, arm] of exp.arms.entries()) {
      // Run 2's arms never move `current`, so each starts from version 1.
      const overrides = mergePatch({ dataset: allFile, promote: { enabled: false } }, arm.overrides) as Record<string, unknown>;
      two.push(await run(`run 2: ${arm.label}`, overrides, i === 0 ? {} : { baseline: { kind: 'variant', label: arm.label }, reuse: two[0].result.runId }));
      writeFileSync(join(out, 'results.json'), JSON.stringify({ one, two }, null, 1));
    }
    const e1 = one.result.evaluation!;
    const lines = [
      `Run 1: ${one.result.counts.items} items, trained on ${(one.result.filter?.kept ?? 0) + (one.result.filter?.replayed ?? 0)}; ` +
        `version 1 on its ${e1.items} held-out items ${acc(e1.tuned)} (base ${acc(e1.base)}), retention ${acc(e1.retention)}.`,
      '',
      '| run 2 (from version 1, on the whole dataset) | trained items | steps | train time | held-out: base | version 1 (current) | tuned | tuned vs current: fixed / broken, p | retention (fixed set) | wall |',
      '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|',
    ];
    for (const r of two) {
      const ev = r.result.evaluation!;
      const vs = ev.vsReference;
      lines.push(
        `| ${[
          r.label.replace(/^run 2: /, ''),
          String((r.result.filter?.kept ?? 0) + (r.result.filter?.replayed ?? 0)),
          String(r.result.train?.steps ?? 0),
          r.result.train ? duration(r.result.train.trainSeconds) : '–',
          acc(ev.base),
          acc(ev.current),
          acc(ev.tuned),
          vs ? `${vs.fixed} / ${vs.broken}, p = ${vs.pValue.toPrecision(2)}` : '–',
          acc(ev.retention),
          duration(r.wallSeconds),
        ].join(' | ')} |`,
      );
    }
    lines.push('', `Whole experiment: ${duration((Date.now() - t0) / 1000)} (\`npx tsx bench/chain.ts ${process.argv[2] ?? ''}\`); runs in ${out}.`);
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
