/**
 * The artifact store, on both backends: a local directory, and a real S3-compatible server
 * (versitygw) through the real AWS SDK over HTTP. Blobs are verified before they become visible
 * and when they are read; documents support create-if-absent; nothing half-written is ever
 * visible under its address.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { CorruptArtifactError, RunIdReused } from '../src/errors';
import { Store, objectKey } from '../src/store/store';
import { LocalBackend } from '../src/store/local';
import { S3Backend } from '../src/store/s3';
import { normaliseStoreUrl, parseS3Url } from '../src/store/location';
import { getDir, putDir } from '../src/store/manifest';
import { once } from '../src/store/steps';
import type { WriteChunk } from '../src/store/files';
import { s3Client, s3Env, startS3Server, type S3Server } from './support/s3server';
import { tempDir } from './support/stack';

let s3: S3Server;
const savedEnv = { ...process.env };

beforeAll(async () => {
  s3 = await startS3Server();
  Object.assign(process.env, s3Env(s3));
});
afterAll(async () => {
  await s3?.stop();
  process.env = savedEnv;
});

const backends: [string, () => Store][] = [
  ['local directory', () => new Store(new LocalBackend(tempDir('slearn-store-')))],
  ['S3 (versitygw)', () => new Store(new S3Backend({ bucket: s3.bucket, prefix: `t${Date.now()}${Math.random().toString(36).slice(2, 6)}` }))],
];

describe.each(backends)('the store on %s', (_name, make) => {
  it('writes blobs under their sha256 and reads them back verified, streamed line by line', async () => {
    const store = make();
    const rows = Array.from({ length: 2500 }, (_, i) => ({ i, text: `row ${i} ${'x'.repeat(i % 50)}` }));
    const ref = await store.putJsonl(rows);
    expect(ref).toMatchObject({ count: 2500, bytes: expect.any(Number) });
    expect(ref.uri).toBe(`${store.url}/${objectKey(ref.sha256)}`);
    expect(await store.has(ref)).toBe(true);
    expect(await store.jsonlAll(ref)).toEqual(rows);
    // Same content, same address, nothing written twice.
    expect(await store.putJsonl(rows)).toEqual(ref);
    expect(await store.putJsonl([])).toMatchObject({ count: 0, bytes: 0 });
  });

  it('documents: create-if-absent lets exactly one of several writers win', async () => {
    const store = make();
    const wins = await Promise.all(Array.from({ length: 6 }, (_, i) => store.writeDoc('leases/x/0000000001.json', { i }, { ifAbsent: true })));
    expect(wins.filter(Boolean)).toHaveLength(1);
    const winner = wins.indexOf(true);
    expect(await store.readDoc('leases/x/0000000001.json')).toEqual({ i: winner });
    expect(await store.writeDoc('leases/x/0000000001.json', { i: 99 })).toBe(true); // unconditional overwrite
    expect(await store.listDocs('leases/x')).toEqual(['leases/x/0000000001.json']);
    expect(await store.readDoc('leases/x/none.json')).toBeUndefined();
  });

  it('refuses keys that could escape the store', async () => {
    const store = make();
    for (const key of ['../x.json', 'a/../../b.json', '/abs.json', 'a//b.json', '.hidden/x.json']) {
      await expect(store.writeDoc(key, {})).rejects.toThrow(/not a valid store key/);
    }
  });

  it('a directory goes up as a manifest of blobs and comes back whole', async () => {
    const store = make();
    const dir = tempDir('slearn-dir-');
    await writeFile(join(dir, 'adapter_config.json'), '{"r": 8}');
    await writeFile(join(dir, 'adapter_model.safetensors'), Buffer.alloc(300_000, 7));
    const ref = await putDir(store, dir, 'adapter', { steps: 3 });
    const out = join(tempDir('slearn-dir-'), 'copy');
    const m = await getDir(store, ref, out);
    expect(m.files.map((f) => f.name)).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(readdirSync(out).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });

  it('a step record is written once; the same run id with other input is refused', async () => {
    const store = make();
    let runs = 0;
    const step = (fp: string) =>
      once(store, { runId: 'r1' }, 'filter', fp, {}, async () => {
        runs++;
        return { outputs: {}, result: { fp } };
      });
    expect(await step('a')).toEqual({ fp: 'a' });
    expect(await step('a')).toEqual({ fp: 'a' });
    expect(runs).toBe(1);
    await expect(step('b')).rejects.toBeInstanceOf(RunIdReused);
  });
});

describe('a damaged blob is never read as good', () => {
  it('local: bytes changed on disk fail the read with CorruptArtifactError', async () => {
    const root = tempDir('slearn-store-');
    const store = new Store(new LocalBackend(root));
    const ref = await store.putBytes('the original bytes\n');
    writeFileSync(join(root, objectKey(ref.sha256)), 'the original bytez\n');
    await expect(store.text(ref)).rejects.toBeInstanceOf(CorruptArtifactError);
  });

  it('S3: an object replaced behind the store fails the read', async () => {
    const prefix = `c${Date.now()}`;
    const store = new Store(new S3Backend({ bucket: s3.bucket, prefix }));
    const ref = await store.putBytes('the original bytes\n');
    await s3Client(s3).send(new PutObjectCommand({ Bucket: s3.bucket, Key: `${prefix}/${objectKey(ref.sha256)}`, Body: 'tampered' }));
    await expect(store.text(ref)).rejects.toBeInstanceOf(CorruptArtifactError);
  });
});

describe('a short or failed write leaves no blob under its address', () => {
  const objects = (root: string) => {
    try {
      return readdirSync(join(root, 'objects'), { recursive: true }).filter((f) => String(f).length > 60);
    } catch {
      return [];
    }
  };

  it('short counts are continued, not ignored: the blob is whole', async () => {
    const root = tempDir('slearn-store-');
    // A disk that accepts at most 1000 bytes per call, as a nearly full one does.
    const short: WriteChunk = (fh, buf, off, len) => fh.write(buf, off, Math.min(len, 1000));
    const store = new Store(new LocalBackend(root, short), short);
    const data = 'y'.repeat(50_000);
    const ref = await store.putBytes(data);
    expect(await store.text(ref)).toBe(data);
  });

  it('a disk that fills up part-way: the write fails and nothing is published', async () => {
    const root = tempDir('slearn-store-');
    let written = 0;
    const full: WriteChunk = async (fh, buf, off, len) => {
      if (written > 10_000) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      const r = await fh.write(buf, off, Math.min(len, 4096));
      written += r.bytesWritten;
      return r;
    };
    const store = new Store(new LocalBackend(root, full), full);
    await expect(
      store.putStream(
        (function* () {
          for (let i = 0; i < 100; i++) yield 'z'.repeat(1 << 16);
        })(),
      ),
    ).rejects.toThrow(/ENOSPC/);
    expect(objects(root)).toEqual([]);
  });

  it('S3: bytes damaged between hashing and upload are refused by the server (checksum), nothing is visible', async () => {
    const prefix = `l${Date.now()}`;
    const lying: WriteChunk = async (fh, buf, off, len) => {
      await fh.write(Buffer.alloc(len, 0x21), 0, len);
      return { bytesWritten: len };
    };
    const store = new Store(new S3Backend({ bucket: s3.bucket, prefix }), lying);
    await expect(store.putBytes('the bytes we meant\n')).rejects.toThrow();
    expect(await store.listDocs('objects')).toEqual([]);
  });

  it('a write that claims success but lost bytes is caught before the blob becomes visible', async () => {
    const root = tempDir('slearn-store-');
    const lying: WriteChunk = async (fh, buf, off, len) => {
      await fh.write(buf, off, Math.floor(len / 2));
      return { bytesWritten: len };
    };
    const store = new Store(new LocalBackend(root), lying);
    await expect(store.putBytes('w'.repeat(10_000))).rejects.toThrow(/damaged/);
    expect(objects(root)).toEqual([]);
  });
});

describe('store locations', () => {
  it('parses s3:// URLs and refuses malformed ones with what is wrong', () => {
    expect(parseS3Url('s3://my-bucket/runs/prod')).toEqual({ bucket: 'my-bucket', prefix: 'runs/prod' });
    expect(parseS3Url('s3://my-bucket')).toEqual({ bucket: 'my-bucket', prefix: '' });
    expect(parseS3Url('s3://My_Bucket/x')).toMatch(/not a valid S3 bucket name/);
    expect(parseS3Url('s3:/bucket')).toMatch(/s3:\/\/bucket\/prefix/);
    expect(normaliseStoreUrl('s3://b-1/a/b/')).toBe('s3://b-1/a/b');
    expect(normaliseStoreUrl('ftp://x/y')).toEqual({ error: expect.stringMatching(/unsupported scheme/) });
    expect(normaliseStoreUrl('rel/dir', '/base')).toBe('file:///base/rel/dir');
  });

  it('an unreachable S3 endpoint or a missing bucket fails the probe with what to fix', async () => {
    await expect(new S3Backend({ bucket: 'no-such-bucket-here', prefix: '' }).probe()).rejects.toThrow(/cannot be written/);
  });
});
