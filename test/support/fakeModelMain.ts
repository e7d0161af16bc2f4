// The deterministic fake endpoint as a process of its own (as a real endpoint would be), for
// benchmarks: `tsx test/support/fakeModelMain.ts ITEMS.jsonl LATENCY_MS` prints its base URL.
import { readFileSync } from 'node:fs';
import { startFakeModel } from './fakeModel';

async function main() {
  const items = readFileSync(process.argv[2], 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { question: string; answer: string });
  const fake = await startFakeModel({ items, knownPercent: Number(process.env.KNOWN_PERCENT ?? 50), latencyMs: Number(process.argv[3] ?? 0) });
  console.log(fake.baseUrl);
  process.on('SIGTERM', () => void fake.close().then(() => process.exit(0)));
}
void main();
