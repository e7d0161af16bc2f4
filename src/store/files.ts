import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** How bytes reach a file; tests swap it to simulate a full disk or a lying write. */
export type WriteChunk = (fh: FileHandle, buf: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>;
export const defaultWrite: WriteChunk = (fh, buf, offset, length) => fh.write(buf, offset, length);

/** Writes every byte: a short count (a full disk reports one before failing) is continued, never ignored. */
export async function writeAll(fh: FileHandle, buf: Buffer, write: WriteChunk = defaultWrite): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await write(fh, buf, off, buf.length - off);
    if (!(bytesWritten > 0)) throw new Error(`write made no progress after ${off} of ${buf.length} bytes (disk full?)`);
    off += bytesWritten;
  }
}

/** fsync a directory, so a rename or link in it survives a power cut. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    /* some filesystems refuse fsync on directories; the rename itself is still atomic */
  } finally {
    await fh?.close();
  }
}

export async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

export function tempName(dir: string, hint = 'tmp'): string {
  return join(dir, `.${hint}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Temp file, every byte written, fsync, rename, fsync the directory: readers see the old file or the whole new one. */
export async function atomicWriteFile(dest: string, data: Buffer | string, write: WriteChunk = defaultWrite): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempName(dirname(dest), 'write');
  const fh = await open(tmp, 'w');
  try {
    await writeAll(fh, typeof data === 'string' ? Buffer.from(data) : data, write);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, dest);
  await fsyncDir(dirname(dest));
}
