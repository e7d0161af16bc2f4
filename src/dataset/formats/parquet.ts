import { loadEsm } from './esm';
import { record } from '../records';
import { toPlain } from './plain';
import type { SourceEvent } from './source';

/** The part of hyparquet used here (its types are not reachable from CommonJS resolution). */
interface AsyncBuffer {
  byteLength: number;
  slice(start: number, end?: number): Promise<ArrayBuffer> | ArrayBuffer;
}
interface Metadata {
  num_rows: bigint | number;
  row_groups: { num_rows: bigint | number }[];
}
interface Hyparquet {
  asyncBufferFromFile(file: string): Promise<AsyncBuffer>;
  parquetMetadataAsync(file: AsyncBuffer): Promise<Metadata>;
  parquetSchema(metadata: Metadata): { children: { element: { name: string } }[] };
  parquetReadObjects(o: { file: AsyncBuffer; metadata: Metadata; rowStart: number; rowEnd: number; compressors?: unknown }): Promise<Record<string, unknown>[]>;
}

/**
 * Parquet, read one row group at a time with hyparquet (snappy built in; zstd, gzip, brotli, lz4
 * from hyparquet-compressors), so memory holds one row group, never the file. Rows are located by
 * their number from 1.
 */
export async function* parquetEvents(file: string): AsyncGenerator<SourceEvent> {
  const hp = await loadEsm<Hyparquet>('hyparquet');
  // Snappy is built into hyparquet; without this package, zstd/gzip/brotli/lz4 files fail below, saying so.
  const compressors = await loadEsm<{ compressors: unknown }>('hyparquet-compressors').then(
    (m) => m.compressors,
    () => undefined,
  );
  let buffer: AsyncBuffer;
  let metadata: Metadata;
  try {
    buffer = await hp.asyncBufferFromFile(file);
    metadata = await hp.parquetMetadataAsync(buffer);
  } catch (e) {
    yield {
      kind: 'problem',
      message: `not a readable Parquet file (${(e as Error).message}): check that it is Parquet, or give it the extension of its real format`,
    };
    return;
  }
  const names = hp.parquetSchema(metadata).children.map((c) => c.element.name);
  yield { kind: 'columns', names, where: {} };
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await hp.parquetReadObjects({ file: buffer, metadata, rowStart, rowEnd, compressors });
    } catch (e) {
      const why = (e as Error).message;
      const hint =
        !compressors && /compress|codec/i.test(why) ? '; reading it needs the hyparquet-compressors package: check that slearn is installed whole' : '';
      yield {
        kind: 'problem',
        where: { row: rowStart + 1 },
        message: `cannot read the rows ${rowStart + 1}-${rowEnd} (${why}${hint}): check the file, or write it again with pyarrow`,
      };
      return;
    }
    for (let i = 0; i < rows.length; i++) {
      const value = record();
      for (const [k, v] of Object.entries(rows[i])) value[k] = toPlain(v);
      yield { kind: 'record', where: { row: rowStart + i + 1 }, value };
    }
    rowStart = rowEnd;
  }
}
