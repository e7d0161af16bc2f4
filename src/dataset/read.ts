/**
 * Reads a dataset in any accepted file type and record shape, streamed: every valid item goes to
 * the caller one at a time, every problem is collected with where it is (`FILE:LINE`, or
 * `FILE: row N` for Parquet and Arrow) and its field. Callers refuse the dataset if there is any.
 *
 *   file types   JSON Lines, JSON array, CSV/TSV with a header, Parquet, a `datasets`
 *                save_to_disk folder (Arrow IPC) — ./detect.ts, ./formats/
 *   shapes       qa, chat, ShareGPT, prompt/completion, Alpaca, or a `columns:` mapping — ./records.ts
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Columns, DatasetFormat, Item } from '../schemas/dataset';
import type { Problem } from '../problems';
import { fileTypeByName, looksLikeDataset, resolveFileType } from './detect';
import { arrowEvents, arrowFolder } from './formats/arrow';
import { csvEvents } from './formats/csv';
import { jsonArrayEvents } from './formats/json';
import { jsonlEvents } from './formats/jsonl';
import { parquetEvents } from './formats/parquet';
import { MAX_RECORD_BYTES, type FileType, type Source } from './formats/source';
import { ProblemSink, RecordChecker, type Where } from './records';

export { detectFormat } from './records';
export { looksLikeDataset };
export type { FileType, Where };
/** A JSON Lines line, a JSON array element or a CSV row over this size is refused. */
export const MAX_LINE_BYTES = MAX_RECORD_BYTES;

export interface ReadOptions {
  /** Where the item fields are, for a dataset in none of the known shapes (the config's `columns:`). */
  columns?: Columns;
  /** The name problems and notices show (default: the path as given). */
  displayName?: string;
  /** Problems kept (default 200); past it they are counted in one last problem. */
  maxProblems?: number;
}

export interface DatasetScan {
  /** The record shape (`columns` with a mapping); undefined when no record could be read. */
  format?: DatasetFormat;
  fileType: FileType;
  /** Valid items, all passed to onItem. */
  count: number;
  problems: Problem[];
  /** One line each, for the user; not problems (e.g. fields kept under meta, the split read). */
  notices: string[];
}

const NOT_FOUND = 'file not found: check the path (relative paths are relative to the config file)';

type Opened = { source: Source; shownAs: string } | { problem: string; fileType: FileType };

function openSource(file: string, display: string): Opened {
  if (!existsSync(file)) return { problem: NOT_FOUND, fileType: fileTypeByName(file) };
  const r = resolveFileType(file);
  if ('problem' in r) return { problem: r.problem, fileType: r.type };
  const text = { kind: 'text' as const, noun: 'row', notices: [] };
  const typed = { kind: 'typed' as const, noun: 'row', notices: [] };
  switch (r.type) {
    case 'jsonl':
      return {
        shownAs: display,
        source: {
          fileType: 'jsonl',
          kind: 'json',
          noun: 'line',
          notices: [],
          empty: 'file is empty: add one JSON object per line',
          events: () => jsonlEvents(file),
        },
      };
    case 'json':
      return {
        shownAs: display,
        source: {
          fileType: 'json',
          kind: 'json',
          noun: 'element',
          notices: [],
          empty: 'no records: write them as a JSON array [{"question": "...", "answer": "..."}, ...]',
          events: () => jsonArrayEvents(file),
        },
      };
    case 'csv':
    case 'tsv': {
      const sep = r.type === 'csv' ? ',' : '\t';
      const header = r.type === 'csv' ? 'question,answer' : 'question<TAB>answer';
      return {
        shownAs: display,
        source: { ...text, fileType: r.type, empty: `file is empty: add a header line (${header}) and one row per item`, events: () => csvEvents(file, sep) },
      };
    }
    case 'parquet':
      return {
        shownAs: display,
        source: { ...typed, fileType: 'parquet', empty: 'the file has no rows: write the dataset with its rows', events: () => parquetEvents(file) },
      };
    case 'arrow': {
      if (!r.folder)
        return {
          shownAs: display,
          source: { ...typed, fileType: 'arrow', empty: 'the file has no rows: write the dataset with its rows', events: () => arrowEvents([file]) },
        };
      const folder = arrowFolder(file, display);
      if ('problem' in folder) return { problem: folder.problem, fileType: 'arrow' };
      return {
        shownAs: folder.split ? join(display, folder.split) : display,
        source: {
          ...typed,
          fileType: 'arrow',
          notices: folder.notices,
          empty: 'the dataset has no rows: save it with its rows',
          events: () => arrowEvents(folder.files),
        },
      };
    }
  }
}

/** Streams every valid item to onItem in file order (awaiting it: backpressure); collects problems. */
export async function scanDataset(file: string, onItem: (item: Item, where: Where) => void | Promise<void>, opts: ReadOptions = {}): Promise<DatasetScan> {
  const display = opts.displayName ?? file;
  const opened = openSource(file, display);
  if ('problem' in opened) return { fileType: opened.fileType, count: 0, problems: [{ file: display, message: opened.problem }], notices: [] };
  const { source, shownAs } = opened;
  const sink = new ProblemSink(shownAs, opts.maxProblems ?? 200);
  const checker = new RecordChecker(sink, { columns: opts.columns, kind: source.kind, noun: source.noun });
  let count = 0;
  let records = 0;
  let header = false;
  for await (const ev of source.events()) {
    if (ev.kind === 'columns') {
      header = true;
      if (!checker.checkColumns(ev.names, ev.where)) break;
      continue;
    }
    records++;
    if (ev.kind === 'problem') {
      sink.add({ ...ev.where, ...(ev.field ? { field: ev.field } : {}), message: ev.message });
      continue;
    }
    const item = checker.check(ev.value, ev.where);
    if (item) {
      count++;
      await onItem(item, ev.where);
    }
  }
  if (!records && !sink.count) sink.add({ message: header && source.kind === 'text' ? 'no rows below the header: add one row per item' : source.empty });
  return { format: checker.format, fileType: source.fileType, count, problems: sink.list(), notices: [...source.notices, ...checker.notices(shownAs)] };
}

/** Convenience for small files and tests: all items in memory. */
export async function readDataset(file: string, opts: ReadOptions = {}): Promise<DatasetScan & { items: Item[] }> {
  const items: Item[] = [];
  const scan = await scanDataset(file, (item) => void items.push(item), opts);
  return { ...scan, items };
}
