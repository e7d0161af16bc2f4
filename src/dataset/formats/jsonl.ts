import { createReadStream } from 'node:fs';
import { MAX_RECORD_BYTES, type SourceEvent } from './source';

const tooLong = (line: number, bytes: number): SourceEvent => ({
  kind: 'problem',
  where: { line },
  message: `line is ${bytes} bytes; the limit is ${MAX_RECORD_BYTES} (1 MiB): shorten or split the item`,
});

/**
 * JSON Lines, streamed: one record per line, located by line. A line over the limit is skipped
 * without being held; a BOM, CRLF line ends and blank lines are accepted as if clean.
 */
export async function* jsonlEvents(file: string): AsyncGenerator<SourceEvent> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let carry: Buffer[] = [];
  let carryBytes = 0;
  let skipping = -1; // bytes of an over-long line seen so far, or -1
  let lineNo = 0;
  let first = true;

  function* line(raw: Buffer): Generator<SourceEvent> {
    lineNo++;
    if (raw.length && raw[raw.length - 1] === 0x0d) raw = raw.subarray(0, raw.length - 1);
    if (raw.length > MAX_RECORD_BYTES) {
      yield tooLong(lineNo, raw.length);
      return;
    }
    let text: string;
    try {
      text = decoder.decode(raw);
    } catch {
      yield { kind: 'problem', where: { line: lineNo }, message: 'not valid UTF-8: re-save the file as UTF-8' };
      return;
    }
    if (!text.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      yield {
        kind: 'problem',
        where: { line: lineNo },
        message: `invalid JSON (${(e as Error).message}): fix this line; each line must be one complete JSON object`,
      };
      return;
    }
    yield { kind: 'record', where: { line: lineNo }, value };
  }

  for await (let chunk of createReadStream(file, { highWaterMark: 1 << 16 }) as AsyncIterable<Buffer>) {
    if (first) {
      first = false;
      if (chunk.length >= 3 && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) chunk = chunk.subarray(3);
    }
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      if (skipping >= 0) {
        lineNo++;
        yield tooLong(lineNo, skipping + piece.length);
        skipping = -1;
        continue;
      }
      const raw = carry.length ? Buffer.concat([...carry, piece]) : piece;
      carry = [];
      carryBytes = 0;
      yield* line(raw);
    }
    const rest = chunk.subarray(start);
    if (skipping >= 0) skipping += rest.length;
    else if (rest.length) {
      carry.push(rest);
      carryBytes += rest.length;
      // +1: a CR before the LF does not count.
      if (carryBytes > MAX_RECORD_BYTES + 1) {
        skipping = carryBytes;
        carry = [];
        carryBytes = 0;
      }
    }
  }
  if (skipping >= 0) {
    lineNo++;
    yield tooLong(lineNo, skipping);
  } else if (carry.length) yield* line(Buffer.concat(carry));
}
