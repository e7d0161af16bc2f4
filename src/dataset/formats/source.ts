import type { ValueKind, Where } from '../records';

export type FileType = 'jsonl' | 'json' | 'csv' | 'tsv' | 'parquet' | 'arrow';

/** What a file reader yields, in file order: records, problems it found itself, and (tables) the column names first. */
export type SourceEvent =
  | { kind: 'record'; where: Where; value: unknown }
  | { kind: 'problem'; where?: Where; field?: string; message: string }
  | { kind: 'columns'; names: string[]; where: Where };

/** One opened dataset file (or folder): how to read it and how to talk about it. */
export interface Source {
  fileType: FileType;
  kind: ValueKind;
  /** What one record is called in messages. */
  noun: string;
  /** The problem when the file holds no record at all. */
  empty: string;
  notices: string[];
  events(): AsyncIterable<SourceEvent>;
}

/** Records above this size are refused (and, where the reader allows, never held whole). */
export const MAX_RECORD_BYTES = 1 << 20;
