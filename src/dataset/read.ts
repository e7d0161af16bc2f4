import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { ZodType } from 'zod';
import {
  AlpacaLineSchema,
  ChatLineSchema,
  DatasetFormat,
  Item,
  PromptCompletionLineSchema,
  QaLineSchema,
} from '../schemas/dataset';
import { describeIssue, describeValue, fieldPath, Problem } from '../problems';

export const MAX_LINE_BYTES = 1 << 20;
const MAX_PROBLEMS = 200;

const SCHEMAS: Record<DatasetFormat, ZodType> = {
  qa: QaLineSchema,
  chat: ChatLineSchema,
  'prompt-completion': PromptCompletionLineSchema,
  alpaca: AlpacaLineSchema,
};

/** Which format a line is in, from the keys it has (a line, not a file: files are checked for mixing). */
export function detectFormat(obj: Record<string, unknown>): DatasetFormat | undefined {
  if ('messages' in obj) return 'chat';
  if ('question' in obj || 'answer' in obj) return 'qa';
  if ('prompt' in obj || 'completion' in obj) return 'prompt-completion';
  if ('instruction' in obj || 'output' in obj) return 'alpaca';
  return undefined;
}

export interface DatasetReadResult {
  items: Item[];
  format?: DatasetFormat;
  problems: Problem[];
}

function normalise(format: DatasetFormat, v: any): Omit<Item, 'id'> & { id?: string } | string {
  const base = { id: v.id === undefined ? undefined : String(v.id).trim(), aliases: v.aliases?.map((a: string) => a.trim()), meta: v.meta };
  switch (format) {
    case 'qa':
      return { ...base, question: v.question.trim(), answer: v.answer.trim() };
    case 'prompt-completion':
      return { ...base, question: v.prompt.trim(), answer: v.completion.trim() };
    case 'alpaca': {
      const input = (v.input ?? '').trim();
      return { ...base, question: input ? `${v.instruction.trim()}\n\n${input}` : v.instruction.trim(), answer: v.output.trim() };
    }
    case 'chat': {
      const msgs = v.messages as { role: string; content: string }[];
      const last = msgs[msgs.length - 1];
      if (last.role !== 'assistant') return `the last message is "${last.role}": end with the assistant's reference answer`;
      const user = [...msgs.slice(0, -1)].reverse().find((m) => m.role === 'user');
      if (!user) return 'no user message before the assistant\'s answer: add the question as a "user" message';
      if (!user.content.trim()) return 'the user message is empty: write the question';
      if (!last.content.trim()) return 'the assistant message is empty: write the reference answer';
      return { ...base, question: user.content.trim(), answer: last.content.trim() };
    }
  }
}

/**
 * Reads a JSONL dataset in any accepted format and normalises it. Every problem is collected with
 * its line and field; callers refuse the file if there is any.
 */
export function readDataset(file: string, displayName = file): DatasetReadResult {
  const problems: Problem[] = [];
  const add = (p: Omit<Problem, 'file'>) => {
    if (problems.length < MAX_PROBLEMS) problems.push({ file: displayName, ...p });
  };
  let buf: Buffer;
  try {
    if (!statSync(file).isFile()) throw new Error('not a file');
    buf = readFileSync(file);
  } catch {
    return { items: [], problems: [{ file: displayName, message: 'file not found: check the path (relative paths are relative to the config file)' }] };
  }
  if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3);

  const decoder = new TextDecoder('utf-8', { fatal: true });
  const items: Item[] = [];
  const seenIds = new Map<string, number>();
  let format: DatasetFormat | undefined;
  let formatLine = 0;
  let lineNo = 0;
  let start = 0;
  let sawContent = false;
  while (start <= buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end === -1) end = buf.length;
    lineNo++;
    let raw = buf.subarray(start, end);
    start = end + 1;
    if (raw.length && raw[raw.length - 1] === 0x0d) raw = raw.subarray(0, raw.length - 1);
    if (raw.length > MAX_LINE_BYTES) {
      add({ line: lineNo, message: `line is ${raw.length} bytes; the limit is ${MAX_LINE_BYTES} (1 MiB): shorten or split the item` });
      sawContent = true;
      continue;
    }
    let text: string;
    try {
      text = decoder.decode(raw);
    } catch {
      add({ line: lineNo, message: 'not valid UTF-8: re-save the file as UTF-8' });
      sawContent = true;
      continue;
    }
    if (!text.trim()) continue;
    sawContent = true;
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      add({ line: lineNo, message: `invalid JSON (${(e as Error).message}): fix this line; each line must be one complete JSON object` });
      continue;
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      add({ line: lineNo, message: `not a JSON object (got ${describeValue(obj)}): write each line as an object such as {"question": "...", "answer": "..."}` });
      continue;
    }
    const lineFormat = detectFormat(obj as Record<string, unknown>);
    if (!lineFormat) {
      add({
        line: lineNo,
        message:
          'unknown format: use {"question","answer"}, {"messages":[...]}, {"prompt","completion"} or {"instruction","input","output"}',
      });
      continue;
    }
    if (!format) {
      format = lineFormat;
      formatLine = lineNo;
    } else if (lineFormat !== format) {
      add({ line: lineNo, message: `mixed formats: this line is ${lineFormat} but the file is ${format} (from line ${formatLine}); use one format per file` });
      continue;
    }
    const parsed = SCHEMAS[format].safeParse(obj);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const keys = (issue as { keys?: string[] }).keys;
        const field = keys?.length ? keys.join(', ') : fieldPath(issue.path) || undefined;
        const message =
          issue.code === 'unrecognized_keys' ? `unknown field${keys!.length > 1 ? 's' : ''} for the ${format} format: remove or rename` : describeIssue(issue, obj);
        add({ line: lineNo, field, message });
      }
      continue;
    }
    const norm = normalise(format, parsed.data);
    if (typeof norm === 'string') {
      add({ line: lineNo, field: 'messages', message: norm });
      continue;
    }
    let id = norm.id;
    if (id !== undefined) {
      const first = seenIds.get(id);
      if (first !== undefined) {
        add({ line: lineNo, field: 'id', message: `duplicate id "${id}" (first on line ${first}): give each item its own id` });
        continue;
      }
    } else {
      // Content-derived ids stay stable when a growing dataset is re-run on a schedule.
      id = `q-${createHash('sha256').update(norm.question).digest('hex').slice(0, 12)}`;
      if (seenIds.has(id)) id = `${id}-${lineNo}`;
    }
    seenIds.set(id, lineNo);
    const item: Item = { id, question: norm.question, answer: norm.answer };
    if (norm.aliases?.length) item.aliases = norm.aliases;
    if (norm.meta) item.meta = norm.meta;
    items.push(item);
  }
  if (!sawContent) add({ message: 'file is empty: add one JSON object per line' });
  return { items, format, problems };
}
