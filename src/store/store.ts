import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { CorruptArtifactError } from '../errors';
import { jsonText, readAll } from '../streams';
import type { ArtifactRef } from '../schemas/artifacts';
import type { StoreBackend } from './backend';
import { defaultWrite, fsyncDir, tempName, writeAll, type WriteChunk } from './files';

const SHA = /^[0-9a-f]{64}$/;

export function objectKey(sha256: string): string {
  if (!SHA.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
  return `objects/${sha256.slice(0, 2)}/${sha256}`;
}

/** Checks size and sha256 of what flows through; fails the stream at its end when they differ. */
function verifier(ref: ArtifactRef): Transform {
  const hash = createHash('sha256');
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes > ref.bytes) return cb(new CorruptArtifactError(`${ref.uri}: more than the ${ref.bytes} bytes its reference says`));
      cb(null, chunk);
    },
    flush(cb) {
      const sha = hash.digest('hex');
      if (bytes !== ref.bytes || sha !== ref.sha256) {
        return cb(
          new CorruptArtifactError(
            `${ref.uri}: stored object is damaged (${bytes} bytes, sha256 ${sha.slice(0, 12)}; its reference says ${ref.bytes} bytes, ${ref.sha256.slice(0, 12)})`,
          ),
        );
      }
      cb();
    },
  });
}

type Chunks = Iterable<string | Buffer> | AsyncIterable<string | Buffer>;

/**
 * The artifact store: immutable content-addressed blobs (`objects/<aa>/<sha256>`) and small named
 * documents (step records, leases, the registry), over a local directory or S3. Every blob is
 * hashed while it is written, verified before it becomes visible, and verified again as it is read.
 */
export class Store {
  constructor(
    readonly backend: StoreBackend,
    /** How bytes reach spool files; tests swap it to simulate a full disk or a lying write. */
    readonly write: WriteChunk = defaultWrite,
  ) {}

  get url(): string {
    return this.backend.url;
  }

  ref(sha256: string, bytes: number, count?: number): ArtifactRef {
    return { uri: `${this.url}/${objectKey(sha256)}`, sha256, bytes, ...(count !== undefined ? { count } : {}) };
  }

  /** A spool file that hashes what is written to it and publishes it under its hash when finished. */
  async writer(): Promise<BlobWriter> {
    const dir = this.backend.spoolDir();
    await mkdir(dir, { recursive: true });
    const tmp = tempName(dir, 'spool');
    return new BlobWriter(this, tmp, await open(tmp, 'w'), this.write);
  }

  /** Publishes a finished spool file (used by BlobWriter). */
  async publishSpool(tmp: string, sha256: string, bytes: number, count?: number): Promise<ArtifactRef> {
    await this.backend.publish(objectKey(sha256), tmp, { sha256, bytes });
    return this.ref(sha256, bytes, count);
  }

  /** Streams chunks into a spool file while hashing, then publishes it under its hash. */
  async putStream(chunks: Chunks, count?: number): Promise<ArtifactRef> {
    const w = await this.writer();
    try {
      for await (const c of chunks) await w.write(c);
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w.finish(count);
  }

  putBytes(data: string | Buffer, count?: number): Promise<ArtifactRef> {
    return this.putStream([data], count);
  }

  putJson(value: unknown): Promise<ArtifactRef> {
    return this.putBytes(jsonText(value));
  }

  /** JSON Lines from any (async) iterable, streamed: a million rows never sit in memory at once. */
  async putJsonl(rows: Iterable<unknown> | AsyncIterable<unknown>): Promise<ArtifactRef> {
    const w = await this.writer();
    try {
      for await (const r of rows as AsyncIterable<unknown>) await w.row(r);
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w.finish(w.rows);
  }

  async has(ref: ArtifactRef): Promise<boolean> {
    return (await this.backend.size(objectKey(ref.sha256))) === ref.bytes;
  }

  /** The blob's bytes, verified as they stream: a damaged object fails the stream at its end. */
  async open(ref: ArtifactRef): Promise<Readable> {
    const src = await this.backend.get(objectKey(ref.sha256));
    if (!src) throw new CorruptArtifactError(`${ref.uri}: not in the store ${this.url}`);
    const v = verifier(ref);
    src.on('error', (e) => v.destroy(e));
    return src.pipe(v);
  }

  async bytes(ref: ArtifactRef): Promise<Buffer> {
    return readAll(await this.open(ref));
  }

  async text(ref: ArtifactRef): Promise<string> {
    return (await this.bytes(ref)).toString('utf8');
  }

  async json<T>(ref: ArtifactRef): Promise<T> {
    return JSON.parse(await this.text(ref)) as T;
  }

  /** Lines of a JSONL blob, parsed one at a time. */
  async *jsonl<T>(ref: ArtifactRef): AsyncGenerator<T> {
    const rl = createInterface({ input: await this.open(ref), crlfDelay: Infinity });
    for await (const line of rl) if (line.trim()) yield JSON.parse(line) as T;
  }

  async jsonlAll<T>(ref: ArtifactRef): Promise<T[]> {
    const out: T[] = [];
    for await (const r of this.jsonl<T>(ref)) out.push(r);
    return out;
  }

  /** Copies a blob to a local file, verified, appearing at `dest` only when complete. */
  async download(ref: ArtifactRef, dest: string): Promise<void> {
    await mkdir(dirname(dest), { recursive: true });
    const tmp = tempName(dirname(dest), 'download');
    try {
      await pipeline(await this.open(ref), createWriteStream(tmp));
      await rename(tmp, dest);
      await fsyncDir(dirname(dest));
    } finally {
      await rm(tmp, { force: true });
    }
  }

  // Named documents: small JSON objects at readable keys.

  async readDoc<T>(key: string): Promise<T | undefined> {
    const text = await this.readText(key);
    return text === undefined ? undefined : (JSON.parse(text) as T);
  }

  /** A named document's text as it is (a part that may have been cut short), or undefined when there is none. */
  async readText(key: string): Promise<string | undefined> {
    const src = await this.backend.get(key);
    return src ? (await readAll(src)).toString('utf8') : undefined;
  }

  /** Writes a document; with `ifAbsent`, returns false when one is already there (nothing written). */
  writeDoc(key: string, value: unknown, opts: { ifAbsent?: boolean } = {}): Promise<boolean> {
    return this.backend.put(key, Buffer.from(jsonText(value)), opts);
  }

  /**
   * Writes a part of work in progress once under a new key, without fsync: a power cut may lose it
   * (its items are asked again), a killed worker never does.
   */
  async writePart(key: string, text: string): Promise<void> {
    await this.backend.put(key, Buffer.from(text), { ifAbsent: true, durable: false });
  }

  /** Throws with what to fix when the store cannot be reached or written. */
  probe(): Promise<void> {
    return this.backend.probe();
  }

  deleteDoc(key: string): Promise<void> {
    return this.backend.delete(key);
  }

  listDocs(prefix: string): Promise<string[]> {
    return this.backend.list(prefix.endsWith('/') ? prefix : `${prefix}/`);
  }
}

/** Bytes or JSON rows on their way into the store; `finish()` publishes them under their hash. */
export class BlobWriter {
  private readonly hash = createHash('sha256');
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private bytes = 0;
  rows = 0;

  constructor(
    private readonly store: Store,
    private readonly tmp: string,
    private readonly fh: FileHandle,
    private readonly writeChunk: WriteChunk,
  ) {}

  private async flush(): Promise<void> {
    if (!this.pendingLen) return;
    const buf = Buffer.concat(this.pending, this.pendingLen);
    this.pending = [];
    this.pendingLen = 0;
    this.hash.update(buf);
    this.bytes += buf.length;
    await writeAll(this.fh, buf, this.writeChunk);
  }

  async write(chunk: string | Buffer): Promise<void> {
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    this.pending.push(b);
    this.pendingLen += b.length;
    if (this.pendingLen >= 1 << 20) await this.flush();
  }

  /** One JSON Lines row. */
  row(value: unknown): Promise<void> {
    this.rows++;
    return this.write(JSON.stringify(value) + '\n');
  }

  async finish(count?: number): Promise<ArtifactRef> {
    try {
      await this.flush();
      await this.fh.sync();
    } catch (e) {
      await this.abort();
      throw e;
    }
    await this.fh.close();
    return this.store.publishSpool(this.tmp, this.hash.digest('hex'), this.bytes, count ?? (this.rows ? this.rows : undefined));
  }

  /** Gives the spool file up (closing an already closed file is a no-op); an I/O error closing it is reported like any other. */
  async abort(): Promise<void> {
    try {
      await this.fh.close();
    } finally {
      await rm(this.tmp, { force: true });
    }
  }
}
