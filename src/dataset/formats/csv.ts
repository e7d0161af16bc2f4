import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { parse, type CsvError } from 'csv-parse';
import { BadRanges, guardUtf8, LineIndex } from '../bytes';
import { MAX_RECORD_BYTES, type SourceEvent } from './source';

const QUOTING: Record<string, string> = {
  CSV_INVALID_CLOSING_QUOTE: 'a quoted field is followed by more text: quote the whole field and double the quotes inside it ("")',
  CSV_QUOTE_NOT_CLOSED: 'a quoted field is never closed: add the closing quote',
  CSV_MAX_RECORD_SIZE: `row is over ${MAX_RECORD_BYTES} characters (1 MiB): shorten or split the item`,
};

/**
 * CSV or TSV with a header line, streamed with csv-parse. Rows are located by the line they start
 * on (csv-parse's byte count, mapped to lines here: its own line count drifts on CRLF inside quotes).
 * Quotes are honoured where a field starts with one and kept as text elsewhere (relax_quotes).
 */
export async function* csvEvents(file: string, delimiter: ',' | '\t'): AsyncGenerator<SourceEvent> {
  const bad = new BadRanges();
  const index = new LineIndex();
  const input = Readable.from(guardUtf8(createReadStream(file, { highWaterMark: 1 << 16 }) as AsyncIterable<Buffer>, bad, index));
  const parser = parse({
    delimiter,
    info: true,
    relax_column_count: true,
    relax_quotes: true,
    skip_empty_lines: true,
    max_record_size: MAX_RECORD_BYTES,
  });
  input.on('error', (e) => parser.destroy(e));
  input.pipe(parser);

  let header: string[] | undefined;
  const unnamed: number[] = [];
  let end = 0; // byte offset after the last record
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { bytes: number } }>) {
      const start = index.skipLineEnds(end);
      end = info.bytes;
      const where = { line: index.lineAt(start) };
      if (record.every((f) => !f.trim())) continue; // a blank line, or a row of empty cells
      if (bad.overlaps(start, end)) {
        yield { kind: 'problem', where, message: 'not valid UTF-8: re-save the file as UTF-8' };
        if (!header) return;
        continue;
      }
      if (!header) {
        header = record.map((h) => h.trim());
        const seen = new Set<string>();
        let ok = true;
        for (const [i, h] of header.entries()) {
          if (!h)
            unnamed.push(i); // spreadsheets often add empty columns at the end
          else if (seen.has(h)) {
            yield { kind: 'problem', where, field: h, message: 'this column name appears twice in the header: rename one' };
            ok = false;
          }
          seen.add(h);
        }
        if (!ok) return;
        yield { kind: 'columns', names: header.filter(Boolean), where };
        continue;
      }
      const stray = unnamed.find((i) => record[i]?.trim());
      if (stray !== undefined) {
        yield { kind: 'problem', where, message: `column ${stray + 1} has a value but no name in the header: give the column a name, or remove the value` };
        continue;
      }
      if (record.length !== header.length) {
        yield {
          kind: 'problem',
          where,
          message: `row has ${record.length} fields but the header has ${header.length}: check the ${delimiter === '\t' ? 'tabs' : 'commas'} and the quoting of this row`,
        };
        continue;
      }
      const value: Record<string, string> = Object.create(null); // a column named __proto__ is data
      for (let i = 0; i < header.length; i++) if (header[i]) value[header[i]] = record[i];
      yield { kind: 'record', where, value };
    }
  } catch (e) {
    const err = e as CsvError & { bytes?: number };
    if (!err.code?.startsWith('CSV_')) throw e;
    const line = index.lineAt(index.skipLineEnds(Math.max(end, err.bytes ?? end)));
    const what = QUOTING[err.code] ?? `${err.message.replace(/ at line \d+.*$/, '')}: fix the file here`;
    yield { kind: 'problem', where: { line }, message: `${what} (the rest of the file was not read)` };
  } finally {
    input.destroy();
  }
}
