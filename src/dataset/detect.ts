/**
 * Which reader a dataset path needs: by extension, a `save_to_disk` folder, or, without a telling
 * extension, by its first bytes. Only the first few KiB are ever read here.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { isDatasetsFolder } from './formats/arrow';
import type { FileType } from './formats/source';
import { detectFormat } from './records';

const BY_EXTENSION: Record<string, FileType> = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.jsonlines': 'jsonl',
  '.json': 'json',
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.tab': 'tsv',
  '.parquet': 'parquet',
  '.pq': 'parquet',
  '.arrow': 'arrow',
};
export const COMPRESSED = /\.(gz|bz2|xz|zst|zstd|lz4|zip|7z|tar)$/i;

type Sniffed = 'parquet' | 'arrow' | 'json-array' | 'json-object' | 'empty' | 'other';

/** The first bytes of a file (at most `n`), or undefined when it cannot be read. */
function head(file: string, n: number): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const b = Buffer.alloc(n);
    return b.subarray(0, readSync(fd, b, 0, n, 0));
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function sniff(b: Buffer): Sniffed {
  if (b.subarray(0, 4).toString('latin1') === 'PAR1') return 'parquet';
  if (b.subarray(0, 6).toString('latin1') === 'ARROW1' || (b.length >= 4 && b.readUInt32LE(0) === 0xffffffff)) return 'arrow';
  let i = b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf ? 3 : 0;
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x09 || b[i] === 0x0a || b[i] === 0x0d)) i++;
  if (i === b.length) return 'empty';
  return b[i] === 0x5b ? 'json-array' : b[i] === 0x7b ? 'json-object' : 'other';
}

export type Resolved = { type: FileType; folder?: boolean } | { problem: string; type: FileType };

/** How to read `file` (which exists). A `.json` file that holds one object per line is read as JSON Lines. */
export function resolveFileType(file: string): Resolved {
  if (statSync(file).isDirectory()) {
    if (isDatasetsFolder(file)) return { type: 'arrow', folder: true };
    return { type: 'jsonl', problem: 'a folder, not a dataset: give a dataset file (.jsonl, .json, .csv, .tsv, .parquet) or a datasets save_to_disk folder' };
  }
  if (COMPRESSED.test(file)) return { type: 'jsonl', problem: 'a compressed file: decompress it first and give the file it holds' };
  const ext = extname(file).toLowerCase();
  const byExt = BY_EXTENSION[ext];
  if (byExt && byExt !== 'json') return { type: byExt };
  const sniffed = sniff(head(file, 4096) ?? Buffer.alloc(0));
  if (ext === '.json') return { type: sniffed === 'json-object' ? 'jsonl' : 'json' };
  switch (sniffed) {
    case 'parquet':
      return { type: 'parquet' };
    case 'arrow':
      return { type: 'arrow' };
    case 'json-array':
      return { type: 'json' };
    case 'json-object':
    case 'empty':
      return { type: 'jsonl' };
    default:
      return {
        type: 'jsonl',
        problem:
          'cannot tell the file type from its name or its first bytes: give it the extension of its format (.jsonl, .json, .csv, .tsv, .parquet, .arrow)',
      };
  }
}

/** The file type a path would have, from its extension alone (for a path that does not exist). */
export function fileTypeByName(file: string): FileType {
  return BY_EXTENSION[extname(file).toLowerCase()] ?? 'jsonl';
}

/**
 * For `slearn validate FILE`: true when FILE is a dataset rather than a YAML or JSON config: a
 * dataset extension, a save_to_disk folder, Parquet or Arrow bytes, a JSON array, or JSON Lines
 * (a first line that is a whole object, and not a config's `{name, dataset, model}`).
 */
export function looksLikeDataset(file: string): boolean {
  const ext = extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return false;
  let isDir: boolean;
  try {
    isDir = statSync(file).isDirectory();
  } catch {
    return ext !== '.json' && ext in BY_EXTENSION; // a missing dataset is reported as such
  }
  if (isDir) return isDatasetsFolder(file);
  if (ext in BY_EXTENSION && ext !== '.json') return true;
  const b = head(file, 64 * 1024);
  if (!b) return false;
  switch (sniff(b)) {
    case 'parquet':
    case 'arrow':
    case 'json-array':
      return true;
    case 'json-object': {
      const text = b
        .toString('utf8')
        .replace(/^\uFEFF/, '')
        .trimStart();
      const nl = text.indexOf('\n');
      if (nl === -1 && b.length === 64 * 1024) return true; // a first line longer than any config
      try {
        const first = JSON.parse(nl === -1 ? text : text.slice(0, nl));
        if (typeof first !== 'object' || first === null || Array.isArray(first)) return false;
        return detectFormat(first) !== undefined || !('dataset' in first && 'model' in first);
      } catch {
        return false; // a pretty-printed object: a config
      }
    }
    default:
      return false;
  }
}
