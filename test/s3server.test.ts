/**
 * The S3-compatible server the artifact store is tested against (versitygw, see
 * test/support/s3server.ts), checked with the real AWS SDK v3 for the S3 features
 * the store relies on.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Readable } from 'node:stream';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  paginateListObjectsV2,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { s3Client, s3Env, startS3Server, type S3Server } from './support/s3server';

jest.setTimeout(30_000);

let s: S3Server;
let c: S3Client;

beforeAll(async () => {
  s = await startS3Server();
  c = s3Client(s);
});

afterAll(async () => {
  c?.destroy();
  await s?.stop();
  if (s) rmSync(s.dir, { recursive: true, force: true });
});

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('base64');

async function statusOf(p: Promise<unknown>): Promise<{ name: string; status?: number }> {
  try {
    await p;
    return { name: 'ok', status: 200 };
  } catch (e) {
    const err = e as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: err.name, status: err.$metadata?.httpStatusCode };
  }
}

test('put, streamed get, head, delete', async () => {
  const Bucket = s.bucket;
  const body = randomBytes(300_000);
  const put = await c.send(
    new PutObjectCommand({ Bucket, Key: 'basic/obj.bin', Body: body, ContentType: 'application/octet-stream', Metadata: { step: 'seven' } }),
  );
  expect(put.ETag).toMatch(/^"[0-9a-f]{32}"$/);

  const head = await c.send(new HeadObjectCommand({ Bucket, Key: 'basic/obj.bin' }));
  expect(head.ContentLength).toBe(body.length);
  expect(head.ETag).toBe(put.ETag);
  expect(head.Metadata).toEqual({ step: 'seven' });

  const got = await c.send(new GetObjectCommand({ Bucket, Key: 'basic/obj.bin' }));
  expect(got.Body).toBeInstanceOf(Readable);
  const chunks: Buffer[] = [];
  for await (const chunk of got.Body as Readable) chunks.push(chunk as Buffer);
  expect(Buffer.concat(chunks).equals(body)).toBe(true);

  const ranged = await c.send(new GetObjectCommand({ Bucket, Key: 'basic/obj.bin', Range: 'bytes=10-19' }));
  expect(Buffer.from(await ranged.Body!.transformToByteArray()).equals(body.subarray(10, 20))).toBe(true);

  await c.send(new DeleteObjectCommand({ Bucket, Key: 'basic/obj.bin' }));
  expect(await statusOf(c.send(new HeadObjectCommand({ Bucket, Key: 'basic/obj.bin' })))).toEqual({ name: 'NotFound', status: 404 });
  expect(await statusOf(c.send(new GetObjectCommand({ Bucket, Key: 'basic/obj.bin' })))).toEqual({ name: 'NoSuchKey', status: 404 });
});

test('ListObjectsV2: prefix, delimiter and pagination with ContinuationToken', async () => {
  const Bucket = s.bucket;
  const keys = Array.from({ length: 23 }, (_, i) => `list/p/${String(i).padStart(3, '0')}`);
  await Promise.all([...keys, 'list/q/other', 'list/p2'].map((Key) => c.send(new PutObjectCommand({ Bucket, Key, Body: Key }))));

  const seen: string[] = [];
  let token: string | undefined;
  let pages = 0;
  do {
    const r = await c.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/p/', MaxKeys: 5, ContinuationToken: token }));
    pages++;
    expect(r.KeyCount).toBe(r.Contents?.length ?? 0);
    seen.push(...(r.Contents ?? []).map((o) => o.Key!));
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
    if (r.IsTruncated) expect(token).toBeTruthy();
  } while (token);
  expect(pages).toBe(5);
  expect(seen).toEqual(keys);

  const paged: string[] = [];
  for await (const page of paginateListObjectsV2({ client: c, pageSize: 7 }, { Bucket, Prefix: 'list/' }))
    paged.push(...(page.Contents ?? []).map((o) => o.Key!));
  expect(paged).toEqual([...keys, 'list/p2', 'list/q/other'].sort());

  const dirs = await c.send(new ListObjectsV2Command({ Bucket, Prefix: 'list/', Delimiter: '/' }));
  expect(dirs.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['list/p/', 'list/q/']);
  expect(dirs.Contents?.map((o) => o.Key)).toEqual(['list/p2']);
});

test('conditional writes: If-None-Match * creates once, If-Match compares ETags', async () => {
  const Bucket = s.bucket;
  const Key = 'cond/lease';
  const first = await c.send(new PutObjectCommand({ Bucket, Key, Body: 'owner-a', IfNoneMatch: '*' }));
  expect(await statusOf(c.send(new PutObjectCommand({ Bucket, Key, Body: 'owner-b', IfNoneMatch: '*' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
  expect(await (await c.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString()).toBe('owner-a');

  // Compare-and-swap on the ETag.
  const second = await c.send(new PutObjectCommand({ Bucket, Key, Body: 'owner-a renewed', IfMatch: first.ETag }));
  expect(second.ETag).not.toBe(first.ETag);
  expect(await statusOf(c.send(new PutObjectCommand({ Bucket, Key, Body: 'stale writer', IfMatch: first.ETag })))).toEqual({
    name: 'PreconditionFailed',
    status: 412,
  });
  expect(await statusOf(c.send(new PutObjectCommand({ Bucket, Key: 'cond/missing', Body: 'x', IfMatch: first.ETag })))).toEqual({
    name: 'NoSuchKey',
    status: 404,
  });
  expect(await (await c.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString()).toBe('owner-a renewed');

  // Racing creators: exactly one wins.
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) => statusOf(c.send(new PutObjectCommand({ Bucket, Key: 'cond/race', Body: `writer-${i}`, IfNoneMatch: '*' })))),
  );
  expect(results.filter((r) => r.status === 200)).toHaveLength(1);
  expect(results.filter((r) => r.status !== 200).every((r) => r.status === 412 || r.status === 409)).toBe(true);

  // Conditional delete: only the holder of the current ETag releases the lease.
  expect(await statusOf(c.send(new DeleteObjectCommand({ Bucket, Key, IfMatch: first.ETag })))).toEqual({ name: 'PreconditionFailed', status: 412 });
  await c.send(new DeleteObjectCommand({ Bucket, Key, IfMatch: second.ETag }));
  await c.send(new PutObjectCommand({ Bucket, Key, Body: 'owner-c', IfNoneMatch: '*' }));
});

test('ChecksumSHA256 on PutObject is verified by the server', async () => {
  const Bucket = s.bucket;
  const body = Buffer.from('model weights, pretend');
  const ok = await c.send(new PutObjectCommand({ Bucket, Key: 'sum/good', Body: body, ChecksumSHA256: sha256(body) }));
  expect(ok.ChecksumSHA256).toBe(sha256(body));
  const head = await c.send(new HeadObjectCommand({ Bucket, Key: 'sum/good', ChecksumMode: 'ENABLED' }));
  expect(head.ChecksumSHA256).toBe(sha256(body));

  const wrong = await statusOf(c.send(new PutObjectCommand({ Bucket, Key: 'sum/bad', Body: body, ChecksumSHA256: sha256('something else') })));
  expect(wrong).toEqual({ name: 'BadDigest', status: 400 });
  expect(await statusOf(c.send(new HeadObjectCommand({ Bucket, Key: 'sum/bad' })))).toEqual({ name: 'NotFound', status: 404 });
});

test('multipart upload: invisible until CompleteMultipartUpload; lib-storage Upload of 20 MB', async () => {
  const Bucket = s.bucket;
  const Key = 'mpu/manual.bin';
  const part1 = randomBytes(5 * 1024 * 1024);
  const part2 = randomBytes(1234);
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket, Key }));
  const p1 = await c.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: part1 }));
  const p2 = await c.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 2, Body: part2 }));
  expect(await statusOf(c.send(new HeadObjectCommand({ Bucket, Key })))).toEqual({ name: 'NotFound', status: 404 });
  const listed = await c.send(new ListObjectsV2Command({ Bucket, Prefix: 'mpu/' }));
  expect(listed.Contents ?? []).toEqual([]);
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket,
      Key,
      UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: p1.ETag },
          { PartNumber: 2, ETag: p2.ETag },
        ],
      },
    }),
  );
  const head = await c.send(new HeadObjectCommand({ Bucket, Key }));
  expect(head.ContentLength).toBe(part1.length + part2.length);
  expect(head.ETag).toMatch(/-2"$/);

  // Conditional create also applies when completing a multipart upload.
  const again = await c.send(new CreateMultipartUploadCommand({ Bucket, Key }));
  const q1 = await c.send(new UploadPartCommand({ Bucket, Key, UploadId: again.UploadId, PartNumber: 1, Body: 'late' }));
  const complete = new CompleteMultipartUploadCommand({
    Bucket,
    Key,
    UploadId: again.UploadId,
    IfNoneMatch: '*',
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: q1.ETag }] },
  });
  expect(await statusOf(c.send(complete))).toEqual({ name: 'PreconditionFailed', status: 412 });
  expect((await c.send(new HeadObjectCommand({ Bucket, Key }))).ContentLength).toBe(part1.length + part2.length);

  // The high-level uploader, from a stream of unknown length.
  const big = randomBytes(20 * 1024 * 1024);
  const up = new Upload({
    client: c,
    params: { Bucket, Key: 'mpu/big.bin', Body: Readable.from(chunksOf(big, 256 * 1024)) },
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
  });
  const done = await up.done();
  expect(done.Key).toBe('mpu/big.bin');
  const got = await c.send(new GetObjectCommand({ Bucket, Key: 'mpu/big.bin' }));
  const h = createHash('sha256');
  for await (const chunk of got.Body as Readable) h.update(chunk as Buffer);
  expect(h.digest('base64')).toBe(sha256(big));
});

function* chunksOf(b: Buffer, n: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n);
}

test('POSIX backend: keys are file paths (unlike AWS S3)', async () => {
  // Objects are files under dir/data/BUCKET, so a key cannot also be a "directory" of other keys,
  // and '//' or '.' segments are normalised away. The store's key layout must avoid both.
  const Bucket = s.bucket;
  await c.send(new PutObjectCommand({ Bucket, Key: 'posix/leaf', Body: 'x' }));
  expect(await statusOf(c.send(new PutObjectCommand({ Bucket, Key: 'posix/leaf/child', Body: 'y' })))).toEqual({ name: 'ObjectParentIsFile', status: 409 });
  expect(await statusOf(c.send(new PutObjectCommand({ Bucket, Key: 'posix', Body: 'z' })))).toEqual({ name: 'ExistingObjectIsDirectory', status: 409 });
  await c.send(new PutObjectCommand({ Bucket, Key: 'posix/a//b', Body: 'x' }));
  const listed = await c.send(new ListObjectsV2Command({ Bucket, Prefix: 'posix/' }));
  expect(listed.Contents?.map((o) => o.Key)).toEqual(['posix/a/b', 'posix/leaf']);
});

test('AWS_ENDPOINT_URL_S3 and the standard AWS variables point a fresh process at the server', async () => {
  await c.send(new PutObjectCommand({ Bucket: s.bucket, Key: 'env/hello', Body: 'from env' }));
  const script = `
    const { S3Client, GetObjectCommand } = require('@aws-sdk/client-s3');
    const c = new S3Client({ forcePathStyle: true });
    c.send(new GetObjectCommand({ Bucket: process.argv[1], Key: 'env/hello' }))
      .then((r) => r.Body.transformToString()).then((t) => console.log(t))
      .catch((e) => { console.error(e); process.exit(1); });`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_')));
  const r = spawnSync(process.execPath, ['-e', script, s.bucket], { env: { ...clean, ...s3Env(s) }, encoding: 'utf8', timeout: 15_000 });
  expect(r.stderr).toBe('');
  expect(r.stdout.trim()).toBe('from env');
});

test('restart on the same directory and port: objects survive, requests meanwhile fail to connect and are retried', async () => {
  const Bucket = s.bucket;
  const body = randomBytes(100_000);
  await c.send(new PutObjectCommand({ Bucket, Key: 'durable/obj', Body: body }));
  const port = s.port;

  await s.stop();
  const once = s3Client(s, { maxAttempts: 1 });
  const down = await once.send(new HeadObjectCommand({ Bucket, Key: 'durable/obj' })).then(
    () => undefined,
    (e: { code?: string; message?: string }) => e,
  );
  once.destroy();
  // Under jest the socket error comes from another realm, so the SDK re-wraps it as
  // 'AWS SDK error wrapper for Error: connect ECONNREFUSED ...' without .code; plain Node keeps .code.
  expect(`${down?.code ?? ''} ${down?.message ?? ''}`).toMatch(/ECONNREFUSED/);

  // A request sent while the server is down succeeds once it is back, after SDK retries.
  const patient = s3Client(s, { maxAttempts: 8 });
  const pending = patient.send(new GetObjectCommand({ Bucket, Key: 'durable/obj' }));
  await new Promise((r) => setTimeout(r, 200));
  await s.restart();
  const got = await pending;
  expect(got.$metadata.attempts).toBeGreaterThan(1);
  expect(Buffer.from(await got.Body!.transformToByteArray()).equals(body)).toBe(true);
  patient.destroy();
  expect(s.port).toBe(port);

  // A hard kill loses nothing that was acknowledged either.
  await c.send(new PutObjectCommand({ Bucket, Key: 'durable/acked', Body: 'acked', IfNoneMatch: '*' }));
  await s.kill();
  await s.restart();
  expect(await (await c.send(new GetObjectCommand({ Bucket, Key: 'durable/acked' }))).Body!.transformToString()).toBe('acked');
  expect((await c.send(new HeadObjectCommand({ Bucket, Key: 'durable/obj' }))).ContentLength).toBe(body.length);
});
