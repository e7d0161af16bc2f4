// The embedded model server against its own bounds: answers/s with 1, 16 and 32 requests in flight,
// with continuous batching of up to 16 (the default), up to 8, and off (`--max-batch 1`), on the
// bundled agronomy questions at the demo's maxTokens. Each server is started, warmed up and stopped here.
//   npx tsx bench/embedded.ts [questions=64]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import pLimit from 'p-limit';
import { trainerCommand } from '../src/paths';
import { freePort } from '../src/temporal/devServer';
import { ROOT, tempDir } from '../test/support/stack';

const N = Number(process.argv[2] ?? 64);
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

async function rate(client: OpenAI, inFlight: number): Promise<{ perSec: number; tokens: number }> {
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
          temperature: 0,
        });
        tokens += r.usage?.completion_tokens ?? 0;
      }),
    ),
  );
  const s = (performance.now() - t0) / 1000;
  return { perSec: questions.length / s, tokens: tokens / s };
}

async function main() {
  const rows: string[] = [];
  for (const [label, extra] of [
    ['continuous batching, up to 16 per step (default)', []],
    ['up to 8 per step (`--max-batch 8`, the old default)', ['--max-batch', '8']],
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
