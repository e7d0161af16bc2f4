// The embedded model server against its own bounds: answers/s with 1, 16 and 32 requests in flight,
// with batches (gathered per window, run to completion) of up to 16 rows (the default), up to 8, and
// off (`--max-batch 1`), on the bundled agronomy questions at the demo's maxTokens; then sampled
// answers (n = 4, temperature 0.7) against greedy ones at the same 16 rows per batch. Each server is
// started, warmed up and stopped here.
//   npx tsx bench/embedded.ts [questions=64] [--sampling-only]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import pLimit from 'p-limit';
import { trainerCommand } from '../src/paths';
import { freePort } from '../src/temporal/devServer';
import { ROOT, tempDir } from '../test/support/stack';

const N = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 64);
const SAMPLING_ONLY = process.argv.includes('--sampling-only');
// --max-batch N: the sampling comparison on a server with another batch size (rows per batch)
const MAX_BATCH = process.argv.includes('--max-batch') ? process.argv[process.argv.indexOf('--max-batch') + 1] : undefined;
// The demo's setting: answers are short phrases.
const MAX_TOKENS = 16;
const questions = readFileSync(join(ROOT, 'examples', 'agriculture', 'train.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .slice(0, N)
  .map((l) => (JSON.parse(l) as { question: string }).question);

async function server(extra: string[]) {
  const port = await freePort();
  const [cmd, ...pre] = trainerCommand();
  const args = [
    ...pre,
    'serve',
    '--base',
    'smollm2-135m-instruct',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--adapter-root',
    tempDir('slearn-bench-adapters-'),
    ...extra,
  ];
  const proc = spawn(cmd, args, { stdio: 'ignore', detached: true });
  const stop = () => {
    try {
      if (proc.pid && proc.exitCode === null) process.kill(-proc.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  };
  process.once('exit', stop);
  for (let i = 0; i < 1200; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return {
    client: new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 600_000 }),
    stop,
  };
}

/** Answers (choices) per second and generated tokens per second, `inFlight` requests of `n` choices at a time. */
async function rate(client: OpenAI, inFlight: number, n = 1, temperature = 0): Promise<{ perSec: number; tokens: number }> {
  const limit = pLimit(inFlight);
  let tokens = 0;
  const t0 = performance.now();
  await Promise.all(
    questions.map((q) =>
      limit(async () => {
        const r = await client.chat.completions.create({
          model: 'smollm2-135m-instruct',
          messages: [
            { role: 'system', content: 'Answer the question with a short phrase only.' },
            { role: 'user', content: q },
          ],
          max_tokens: MAX_TOKENS,
          temperature,
          n,
          seed: 42,
        });
        tokens += r.usage?.completion_tokens ?? 0;
      }),
    ),
  );
  const s = (performance.now() - t0) / 1000;
  return { perSec: (questions.length * n) / s, tokens: tokens / s };
}

/** Sampled answers against greedy ones at the same rows per batch (16 by default): 16 greedy requests or 4 of n = 4 in flight. */
async function sampling(): Promise<void> {
  const s = await server(MAX_BATCH ? ['--max-batch', MAX_BATCH] : []);
  const rows = Number(MAX_BATCH ?? 16);
  await rate(s.client, 4); // warm-up
  const out: string[] = [];
  for (let rep = 0; rep < 2; rep++) {
    const greedy = await rate(s.client, rows);
    const sampled = await rate(s.client, rows / 4, 4, 0.7);
    const both = await rate(s.client, 2 * rows, 1, 0);
    out.push(
      `| ${rep + 1} | ${greedy.perSec.toFixed(2)} | ${sampled.perSec.toFixed(2)} | ${(greedy.perSec / sampled.perSec).toFixed(2)} | ${both.perSec.toFixed(2)} |`,
    );
  }
  s.stop();
  console.log(`\n${N} questions, maxTokens ${MAX_TOKENS}, ${rows} rows per batch\n`);
  console.log(
    `| repeat | greedy answers/s (${rows} × n=1) | sampled answers/s (${rows / 4} × n=4, T=0.7) | greedy ÷ sampled | greedy, ${2 * rows} in flight |\n|---|---:|---:|---:|---:|`,
  );
  for (const r of out) console.log(r);
}

async function main() {
  await sampling();
  if (SAMPLING_ONLY) return;
  const rows: string[] = [];
  for (const [label, extra] of [
    ['batches of up to 16 rows (default)', []],
    ['up to 8 rows (`--max-batch 8`, the old default)', ['--max-batch', '8']],
    ['no batching (`--max-batch 1`)', ['--max-batch', '1']],
  ] as const) {
    const s = await server([...extra]);
    await rate(s.client, 4); // warm-up: first-call allocations, thread pools
    const r = [await rate(s.client, 1), await rate(s.client, 16), await rate(s.client, 32)];
    s.stop();
    rows.push(
      `| ${label} | ${r.map((x) => x.perSec.toFixed(2)).join(' | ')} | ${(r[2].perSec / r[0].perSec).toFixed(1)} | ${r.map((x) => x.tokens.toFixed(0)).join(' → ')} |`,
    );
  }
  console.log(`\n${N} questions, maxTokens ${MAX_TOKENS}, greedy\n`);
  console.log(
    '| server | answers/s, 1 in flight | 16 in flight | 32 in flight | ×, 32 vs 1 | generated tokens/s (1 → 16 → 32) |\n|---|---:|---:|---:|---:|---:|',
  );
  for (const r of rows) console.log(r);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
