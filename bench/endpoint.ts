import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, tempDir } from '../test/support/stack';

/** The fake endpoint in a process of its own, so its CPU is not the client's (a real endpoint is another server). */
export async function endpointProcess(
  items: { question: string; answer: string }[],
  latencyMs: number,
): Promise<{ baseUrl: string; proc: ChildProcess; stop(): Promise<void> }> {
  const file = join(tempDir('slearn-bench-items-'), 'items.jsonl');
  writeFileSync(file, items.map((i) => JSON.stringify({ question: i.question, answer: i.answer })).join('\n') + '\n');
  const proc = spawn(
    process.execPath,
    [
      '--max-old-space-size=4096',
      join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'),
      join(ROOT, 'test', 'support', 'fakeModelMain.ts'),
      file,
      String(latencyMs),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const baseUrl = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout }).once('line', resolve);
    proc.once('exit', (c) => reject(new Error(`fake endpoint exited with ${c}`)));
  });
  const exited = new Promise((r) => proc.once('exit', r));
  // However the benchmark ends, the endpoint goes with it.
  process.once('exit', () => proc.kill('SIGKILL'));
  return {
    baseUrl,
    proc,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}
