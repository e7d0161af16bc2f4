/**
 * Byte-level helpers shared by the text readers (JSON arrays, CSV/TSV): a UTF-8 guard that passes
 * valid text through and marks what is not, and an index from byte offsets to line numbers. Both
 * keep only the chunks not yet passed, so memory stays bounded whatever the file size.
 */
import { isUtf8 } from 'node:buffer';

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const REPLACEMENT = Buffer.from([0xef, 0xbf, 0xbd]);

/** Length of the valid UTF-8 sequence starting at `i`, 0 if invalid, -1 if cut off by the end of `b`. */
function sequenceLength(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    if (c === 0xed) hi = 0x9f; // no UTF-16 surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    if (c === 0xf4) hi = 0x8f; // nothing above U+10FFFF
  } else return 0;
  for (let k = 1; k < n; k++) {
    if (i + k >= b.length) return -1;
    const d = b[i + k];
    if (k === 1 ? d < lo || d > hi : d < 0x80 || d > 0xbf) return 0;
  }
  return n;
}

/** Where a character cut by the chunk's end starts (so it is carried to the next chunk), else `b.length`. */
function cutAt(b: Uint8Array): number {
  for (let i = b.length - 1; i >= Math.max(0, b.length - 3); i--) {
    if ((b[i] & 0xc0) === 0x80) continue;
    return sequenceLength(b, i) === -1 ? i : b.length;
  }
  return b.length;
}

/** Byte ranges `[start, end)` of the guarded output that were not valid UTF-8 in the input. */
export class BadRanges {
  private ranges: [number, number][] = [];
  add(start: number, end: number): void {
    const last = this.ranges[this.ranges.length - 1];
    if (last && last[1] === start) last[1] = end;
    else this.ranges.push([start, end]);
  }
  /** Whether `[start, end)` holds invalid bytes. Queries must come with non-decreasing `start`. */
  overlaps(start: number, end: number): boolean {
    while (this.ranges.length && this.ranges[0][1] <= start) this.ranges.shift();
    return this.ranges.length > 0 && this.ranges[0][0] < end;
  }
}

/** Line numbers (from 1) of byte offsets in a stream seen chunk by chunk; queries must not go backwards. */
export class LineIndex {
  private chunks: Buffer[] = [];
  private chunkStart = 0; // offset of chunks[0]
  private pos = 0; // offset the line count has reached
  private line = 1;

  push(chunk: Buffer): void {
    if (chunk.length) this.chunks.push(chunk);
  }

  lineAt(offset: number): number {
    while (this.pos < offset && this.chunks.length) {
      const c = this.chunks[0];
      const from = this.pos - this.chunkStart;
      const to = Math.min(c.length, offset - this.chunkStart);
      for (let i = c.indexOf(0x0a, from); i !== -1 && i < to; i = c.indexOf(0x0a, i + 1)) this.line++;
      this.pos = this.chunkStart + to;
      if (to === c.length) {
        this.chunks.shift();
        this.chunkStart += c.length;
      }
    }
    return this.line;
  }

  /** The offset of the first byte at or after `offset` that is not a line end (records start there). */
  skipLineEnds(offset: number): number {
    let at = offset;
    let base = this.chunkStart;
    for (const c of this.chunks) {
      for (let i = Math.max(0, at - base); i < c.length; i++) if (c[i] !== 0x0a && c[i] !== 0x0d) return base + i;
      base += c.length;
      at = Math.max(at, base);
    }
    return at;
  }
}

/**
 * Streams `source` through unchanged where it is valid UTF-8 (a leading BOM dropped); each invalid
 * byte becomes U+FFFD and its output range is recorded in `bad`, so the reader can refuse the record
 * holding it with its line. Every output chunk is also handed to `index`.
 */
export async function* guardUtf8(source: AsyncIterable<Buffer>, bad: BadRanges, index: LineIndex): AsyncGenerator<Buffer> {
  let carry: Buffer | undefined;
  let first = true;
  let out = 0;
  const emit = (b: Buffer) => {
    index.push(b);
    out += b.length;
    return b;
  };
  const repair = (b: Buffer): Buffer => {
    const parts: Buffer[] = [];
    let start = 0;
    let at = out;
    for (let i = 0; i < b.length;) {
      const n = sequenceLength(b, i);
      if (n > 0) {
        i += n;
        continue;
      }
      parts.push(b.subarray(start, i), REPLACEMENT);
      at += i - start;
      bad.add(at, at + REPLACEMENT.length);
      at += REPLACEMENT.length;
      start = ++i;
    }
    parts.push(b.subarray(start));
    return Buffer.concat(parts);
  };
  for await (const chunk of source) {
    let b = carry ? Buffer.concat([carry, chunk]) : chunk;
    if (first) {
      if (b.length < 3 && BOM.subarray(0, b.length).equals(b)) {
        carry = b; // too short to tell yet
        continue;
      }
      first = false;
      if (b.subarray(0, 3).equals(BOM)) b = b.subarray(3);
    }
    const cut = cutAt(b);
    carry = cut < b.length ? Buffer.from(b.subarray(cut)) : undefined;
    const whole = b.subarray(0, cut);
    if (whole.length) yield emit(isUtf8(whole) ? whole : repair(whole));
  }
  if (carry?.length) {
    if (first && carry.equals(BOM)) return;
    yield emit(repair(carry));
  }
}
