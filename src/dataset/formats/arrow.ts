import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { RecordBatchReader } from 'apache-arrow';
import { record } from '../records';
import { toPlain } from './plain';
import type { SourceEvent } from './source';

/** What a Hugging Face `datasets` save_to_disk folder holds, or why it cannot be read. */
export type ArrowFolder = { files: string[]; notices: string[]; split?: string } | { problem: string };

const readJson = (p: string): any => JSON.parse(readFileSync(p, 'utf8'));

/** Whether `dir` looks like a `save_to_disk` folder (a Dataset or a DatasetDict). */
export function isDatasetsFolder(dir: string): boolean {
  return ['state.json', 'dataset_info.json', 'dataset_dict.json'].some((f) => existsSync(join(dir, f)));
}

/**
 * The Arrow files of a `save_to_disk` folder, in order (from state.json). A DatasetDict folder
 * (dataset_dict.json, one sub-folder per split) is read through its `train` split, with a notice;
 * without a `train` split the user must name the split folder.
 */
export function arrowFolder(dir: string, display: string): ArrowFolder {
  let notices: string[] = [];
  let split: string | undefined;
  if (existsSync(join(dir, 'dataset_dict.json'))) {
    let splits: string[];
    try {
      splits = readJson(join(dir, 'dataset_dict.json')).splits;
      if (!Array.isArray(splits)) throw new Error('no "splits" list');
    } catch (e) {
      return { problem: `dataset_dict.json is not readable (${(e as Error).message}): save the dataset again with save_to_disk` };
    }
    if (!splits.includes('train')) {
      return {
        problem: `a DatasetDict with the splits ${splits.join(', ')} and no "train": give the split folder to read, e.g. ${join(display, splits[0] ?? 'SPLIT')}`,
      };
    }
    split = 'train';
    notices = [`${display}: a DatasetDict with the splits ${splits.join(', ')}: reading "train" (name ${join(display, 'SPLIT')} to read another)`];
    dir = join(dir, split);
  }
  let files: string[] | undefined;
  if (existsSync(join(dir, 'state.json'))) {
    try {
      files = (readJson(join(dir, 'state.json'))._data_files as { filename: string }[]).map((f) => join(dir, basename(f.filename)));
    } catch (e) {
      return { problem: `state.json is not readable (${(e as Error).message}): save the dataset again with save_to_disk` };
    }
  } else {
    files = readdirSync(dir)
      .filter((f) => /^data-\d+-of-\d+\.arrow$/.test(f))
      .sort()
      .map((f) => join(dir, f));
  }
  if (!files.length) return { problem: 'a folder without data-*.arrow files: give a datasets save_to_disk folder, or a dataset file' };
  const missing = files.find((f) => !existsSync(f));
  if (missing) return { problem: `${basename(missing)} is listed in state.json but missing: copy the whole folder again` };
  return { files, notices, split };
}

/**
 * Arrow IPC files (stream format, as `datasets` writes them, or file format), read with
 * apache-arrow one record batch at a time. Rows are numbered from 1 across all the files, as the
 * dataset indexes them (row N is `ds[N - 1]`).
 */
export async function* arrowEvents(files: string[]): AsyncGenerator<SourceEvent> {
  let row = 0;
  let announced = false;
  for (const file of files) {
    const handle = await open(file, 'r');
    try {
      let reader;
      try {
        reader = await RecordBatchReader.from(handle);
        await reader.open();
      } catch (e) {
        yield {
          kind: 'problem',
          where: row ? { row: row + 1 } : undefined,
          message: `${basename(file)} is not a readable Arrow file (${(e as Error).message}): save the dataset again`,
        };
        return;
      }
      const names = reader.schema.fields.map((f) => f.name);
      if (!announced) {
        announced = true;
        yield { kind: 'columns', names, where: {} };
      }
      for await (const batch of reader) {
        const columns = names.map((n, i) => [n, batch.getChildAt(i)] as const);
        for (let i = 0; i < batch.numRows; i++) {
          const value = record();
          for (const [n, c] of columns) value[n] = toPlain(c?.get(i));
          yield { kind: 'record', where: { row: ++row }, value };
        }
      }
    } finally {
      await handle.close();
    }
  }
}
