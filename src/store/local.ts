import { link, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Readable } from 'node:stream';
import { checkKey, type StoreBackend } from './backend';
import { defaultWrite, fsyncDir, hashFile, tempName, writeAll, type WriteChunk } from './files';

const isErr = (e: unknown, code: string) => (e as NodeJS.ErrnoException)?.code === code;

/** The store as a local directory (one host, or a filesystem every worker mounts at the same path). */
export class LocalBackend implements StoreBackend {
  readonly root: string;
  readonly url: string;

  constructor(
    root: string,
    private readonly write: WriteChunk = defaultWrite,
  ) {
    this.root = resolve(root);
    this.url = pathToFileURL(this.root).href;
  }

  private path(key: string, prefix = false): string {
    const p = join(this.root, ...checkKey(key, prefix).split('/').filter(Boolean));
    const rel = relative(this.root, p);
    if (rel.startsWith('..') || rel.includes(`..${sep}`)) throw new Error(`key escapes the store: ${key}`);
    return p;
  }

  spoolDir(): string {
    return join(this.root, 'tmp');
  }

  async publish(key: string, path: string, info: { sha256: string; bytes: number }): Promise<void> {
    const dest = this.path(key);
    try {
      if ((await this.size(key)) === info.bytes) return;
      // What reached the disk is checked, not what we meant to write: a short or lost write shows here.
      const actual = await hashFile(path);
      if (actual.bytes !== info.bytes || actual.sha256 !== info.sha256) {
        throw new Error(`spooled blob is damaged (${actual.bytes} of ${info.bytes} bytes, sha256 ${actual.sha256.slice(0, 12)}): not published`);
      }
      await mkdir(dirname(dest), { recursive: true });
      // rename replaces a damaged object left by an older writer; identical concurrent writers are harmless.
      await rename(path, dest);
      await fsyncDir(dirname(dest));
    } finally {
      await rm(path, { force: true });
    }
  }

  async put(key: string, body: Buffer, opts: { ifAbsent?: boolean; durable?: boolean } = {}): Promise<boolean> {
    const durable = opts.durable !== false;
    const dest = this.path(key);
    await mkdir(dirname(dest), { recursive: true });
    const tmp = tempName(dirname(dest), 'put');
    const fh = await open(tmp, 'w');
    try {
      try {
        await writeAll(fh, body, this.write);
        if (durable) await fh.sync();
      } finally {
        await fh.close();
      }
      if (opts.ifAbsent) {
        // link() fails when the name exists: an atomic create-if-absent on any POSIX filesystem.
        try {
          await link(tmp, dest);
        } catch (e) {
          if (isErr(e, 'EEXIST')) return false;
          throw e;
        }
      } else await rename(tmp, dest);
      if (durable) await fsyncDir(dirname(dest));
      return true;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async get(key: string): Promise<Readable | undefined> {
    const p = this.path(key);
    try {
      const fh = await open(p, 'r');
      return fh.createReadStream();
    } catch (e) {
      if (isErr(e, 'ENOENT')) return undefined;
      throw e;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(key))).size;
    } catch (e) {
      if (isErr(e, 'ENOENT')) return undefined;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.path(prefix, true);
    const out: string[] = [];
    const walk = async (dir: string) => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if (isErr(e, 'ENOENT') || isErr(e, 'ENOTDIR')) return;
        throw e;
      }
      for (const e of entries) {
        if (e.name.startsWith('.')) continue; // temp files of writers in progress
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else out.push(relative(this.root, p).split(sep).join('/'));
      }
    };
    await walk(base);
    return out.sort();
  }

  async probe(): Promise<void> {
    try {
      await mkdir(this.spoolDir(), { recursive: true });
      const key = `tmp/probe-${process.pid}`;
      await this.put(key, Buffer.from('ok'));
      await this.delete(key);
    } catch (e) {
      throw new Error(`artifact store ${this.root} is not writable (${(e as Error).message}): check the path and its permissions`, { cause: e });
    }
  }
}
