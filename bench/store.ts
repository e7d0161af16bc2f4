// What the artifact store costs, local directory against S3 (a versitygw server on loopback):
// a step record written and found again (what every step pays for idempotency), and seconds per GB
// uploaded and staged back (what training pays for its checkpoints and adapters).
//   npx tsx bench/store.ts [megabytes=512]
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalBackend } from '../src/store/local';
import { S3Backend } from '../src/store/s3';
import { Store } from '../src/store/store';
import { once } from '../src/store/steps';
import { s3Env, startS3Server } from '../test/support/s3server';
import { tempDir } from '../test/support/stack';

const MB = Number(process.argv[2] ?? 512);

async function measure(label: string, store: Store, file: string) {
  // A step record: written once, then found by the retry (the common case of a resumed step).
  const steps = 100;
  let t = Date.now();
  for (let i = 0; i < steps; i++) await once(store, { runId: 'bench' }, `step-${i}`, 'fp', {}, async () => ({ outputs: {}, result: { i } }));
  const write = (Date.now() - t) / steps;
  t = Date.now();
  for (let i = 0; i < steps; i++) await once(store, { runId: 'bench' }, `step-${i}`, 'fp', {}, async () => ({ outputs: {}, result: { i } }));
  const find = (Date.now() - t) / steps;
  t = Date.now();
  const ref = await store.putStream(createReadStream(file) as AsyncIterable<Buffer>);
  const up = (Date.now() - t) / 1000;
  t = Date.now();
  await store.download(ref, join(tempDir('slearn-bench-dl-'), 'blob'));
  const down = (Date.now() - t) / 1000;
  const gb = ref.bytes / 2 ** 30;
  return `| ${label} | ${write.toFixed(1)} ms | ${find.toFixed(1)} ms | ${(up / gb).toFixed(1)} s | ${(down / gb).toFixed(1)} s |`;
}

async function main() {
  const file = join(tempDir('slearn-bench-blob-'), 'blob.bin');
  await writeFile(file, randomBytes(MB * 2 ** 20));
  const rows = [await measure('local directory', new Store(new LocalBackend(tempDir('slearn-bench-store-'))), file)];
  const s3 = await startS3Server();
  Object.assign(process.env, s3Env(s3));
  try {
    rows.push(await measure('S3 (versitygw on loopback)', new Store(new S3Backend({ bucket: s3.bucket, prefix: 'bench' })), file));
  } finally {
    await s3.stop();
  }
  console.log(`\n${MB} MB blob (random bytes), 100 step records\n`);
  console.log('| store | step record written | step record found again | per GB uploaded (hash, verify, publish) | per GB staged (download, verify) |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) console.log(r);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
