import { createReadStream } from 'node:fs';
import { TokenParser, Tokenizer, TokenType } from '@streamparser/json';
import { BadRanges, guardUtf8, LineIndex } from '../bytes';
import { MAX_RECORD_BYTES, type SourceEvent } from './source';

const { LEFT_BRACE, RIGHT_BRACE, LEFT_BRACKET, RIGHT_BRACKET, COMMA } = TokenType;

/**
 * A JSON file holding one top-level array of records, streamed with @streamparser/json: each
 * element is emitted and dropped as soon as it closes (keepStack: false), located by the line
 * where it starts (from the tokenizer's byte offsets).
 */
export async function* jsonArrayEvents(file: string): AsyncGenerator<SourceEvent> {
  const bad = new BadRanges();
  const index = new LineIndex();
  const tokenizer = new Tokenizer();
  const parser = new TokenParser({ paths: ['$.*'], keepStack: false });
  const ready: SourceEvent[] = [];
  let fatal: SourceEvent | undefined;
  let depth = 0;
  let started = false;
  let elementStart = -1;
  let elementLine = 0;
  let tokenEnd = 0;
  let lastOffset = 0;
  const lastLine = () => index.lineAt(lastOffset);

  tokenizer.onToken = (t) => {
    if (fatal) return;
    lastOffset = t.offset;
    if (!started) {
      started = true;
      if (t.token !== LEFT_BRACKET) {
        fatal = {
          kind: 'problem',
          where: { line: lastLine() },
          message: `not a JSON array (the file starts with ${t.token === LEFT_BRACE ? 'an object' : JSON.stringify(t.value)}): write the records as [{"question": "...", "answer": "..."}, ...], or one object per line in a .jsonl file`,
        };
        return;
      }
    } else if (depth === 1 && elementStart < 0 && t.token !== COMMA && t.token !== RIGHT_BRACKET) {
      elementStart = t.offset;
      elementLine = lastLine();
    }
    if (t.token === LEFT_BRACE || t.token === LEFT_BRACKET) depth++;
    else if (t.token === RIGHT_BRACE || t.token === RIGHT_BRACKET) depth--;
    tokenEnd = t.offset + 1;
    parser.write(t);
  };
  parser.onValue = ({ value, stack }) => {
    if (stack.length !== 1 || fatal) return; // only the array's elements
    const where = { line: elementLine };
    if (bad.overlaps(elementStart, tokenEnd)) ready.push({ kind: 'problem', where, message: 'not valid UTF-8: re-save the file as UTF-8' });
    else if (tokenEnd - elementStart > MAX_RECORD_BYTES)
      ready.push({
        kind: 'problem',
        where,
        message: `record is ${tokenEnd - elementStart} bytes; the limit is ${MAX_RECORD_BYTES} (1 MiB): shorten or split the item`,
      });
    else ready.push({ kind: 'record', where, value });
    elementStart = -1;
  };
  const onError = (e: Error) => {
    if (fatal) return;
    // "... at chunk position "15" (absolute position "40") ..." locates the error; else the last token's line.
    const at = /absolute position "(\d+)"/.exec(e.message);
    const line = at ? index.lineAt(Math.max(lastOffset, Number(at[1]))) : lastLine();
    const what = e.message.replace(/ at chunk position.*$/, '').replace(/\.$/, '');
    fatal = { kind: 'problem', where: { line }, message: `invalid JSON (${what}): fix the file here; the rest of it was not read` };
  };
  tokenizer.onError = onError;
  parser.onError = onError;
  parser.onEnd = () => undefined;

  for await (const chunk of guardUtf8(createReadStream(file, { highWaterMark: 1 << 16 }) as AsyncIterable<Buffer>, bad, index)) {
    try {
      tokenizer.write(chunk);
    } catch (e) {
      onError(e as Error);
    }
    lastLine(); // lets the line index drop the chunks behind
    yield* ready.splice(0);
    if (fatal) {
      yield fatal;
      return;
    }
  }
  if (!started) return; // nothing but whitespace: the file is empty
  if (!parser.isEnded) {
    yield {
      kind: 'problem',
      where: { line: lastLine() },
      message: 'the file ends inside the array: it may be cut short; end the array with ] (and check that the last record is whole)',
    };
    return;
  }
}
