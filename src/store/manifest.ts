import { createReadStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ManifestSchema, type ArtifactRef, type Manifest } from '../schemas/artifacts';
import { fsyncDir, tempName } from './files';
import type { Store } from './store';

/** Uploads the files of a flat directory (an adapter, a checkpoint) and returns its manifest's reference. */
export async function putDir(store: Store, dir: string, kind: Manifest['kind'], meta: Record<string, unknown> = {}): Promise<ArtifactRef> {
  const files: Manifest['files'] = [];
  for (const name of (await readdir(dir)).sort()) {
    if (name.startsWith('.') || !(await stat(join(dir, name))).isFile()) continue;
    files.push({ name, ref: await store.putStream(createReadStream(join(dir, name)) as AsyncIterable<Buffer>) });
  }
  return store.putJson({ kind, files, meta } satisfies Manifest);
}

export async function readManifest(store: Store, ref: ArtifactRef): Promise<Manifest> {
  return ManifestSchema.parse(await store.json(ref));
}

/** True when `dir` holds every file of the manifest at its size (a copy that needs no download). */
export async function hasDir(dir: string, m: Manifest): Promise<boolean> {
  for (const f of m.files) {
    // A file that is missing or cannot be read is not a usable copy: the manifest is fetched again.
    const size = await stat(join(dir, f.name)).then(
      (s) => s.size,
      () => -1,
    );
    if (size !== f.ref.bytes) return false;
  }
  return true;
}

/**
 * Materialises a manifest as a local directory: every file verified, the directory appearing
 * whole. A complete copy already there is kept (another stager may be reading it right now).
 */
export async function getDir(store: Store, ref: ArtifactRef, dest: string): Promise<Manifest> {
  const manifest = await readManifest(store, ref);
  if (await hasDir(dest, manifest)) return manifest;
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempName(dirname(dest), 'dir');
  try {
    await mkdir(tmp);
    for (const f of manifest.files) await store.download(f.ref, join(tmp, f.name));
    await rm(dest, { recursive: true, force: true });
    try {
      await rename(tmp, dest);
    } catch (e) {
      // A concurrent stager got there first: its copy is as good as ours.
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !(await hasDir(dest, manifest))) throw e;
    }
    await fsyncDir(dirname(dest));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return manifest;
}
