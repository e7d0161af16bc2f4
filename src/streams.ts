/** Bytes from streams, read whole: for small things only (documents, request bodies), never for datasets. */

/** Thrown by `readAll` when the source holds more than it may. */
export class TooLarge extends Error {
  constructor(readonly maxBytes: number) {
    super(`more than ${maxBytes} bytes`);
    this.name = 'TooLarge';
  }
}

/** Every byte of `source` as one buffer; fails with TooLarge past `maxBytes` (without reading the rest). */
export async function readAll(source: AsyncIterable<Buffer | Uint8Array | string>, maxBytes = Infinity): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of source) {
    const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    n += b.length;
    if (n > maxBytes) throw new TooLarge(maxBytes);
    parts.push(b);
  }
  return Buffer.concat(parts, n);
}

/** A value as the JSON documents slearn writes and prints: two-space indented, one trailing newline. */
export const jsonText = (value: unknown): string => JSON.stringify(value, null, 2) + '\n';
