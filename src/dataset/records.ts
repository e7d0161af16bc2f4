/**
 * One record at a time, whatever file it came from: detect its shape, keep unknown fields under
 * `meta`, refuse near-misses of known fields with a suggestion, validate, normalise to an Item and
 * give it an id. The file readers (./formats/: JSON Lines, JSON, CSV/TSV, Parquet, Arrow; chosen by
 * ./detect.ts, driven by ./read.ts) only turn bytes into records and say where each one is.
 */
import { createHash } from 'node:crypto';
import type { ZodType } from 'zod';
import {
  AlpacaLineSchema,
  ChatLineSchema,
  Columns,
  DatasetFormat,
  Item,
  PromptCompletionLineSchema,
  QaLineSchema,
  ShareGptLineSchema,
} from '../schemas/dataset';
import { describeIssue, describeValue, fieldPath, Problem } from '../problems';

/** Where a record is: its first line in a text file, its row (from 1) in a Parquet or Arrow file. */
export interface Where {
  line?: number;
  row?: number;
}

export const describeWhere = (w: Where): string => (w.line !== undefined ? `line ${w.line}` : w.row !== undefined ? `row ${w.row}` : 'the start');

/** Collects problems up to a limit, then counts the rest. */
export class ProblemSink {
  private readonly kept: Problem[] = [];
  private dropped = 0;
  constructor(
    readonly file: string,
    private readonly max: number,
  ) {}
  add(p: Omit<Problem, 'file'>): void {
    if (this.kept.length >= this.max) {
      this.dropped++;
      return;
    }
    const q: Problem = { file: this.file, ...p };
    if (q.field === undefined) delete q.field;
    this.kept.push(q);
  }
  get count(): number {
    return this.kept.length + this.dropped;
  }
  list(): Problem[] {
    if (!this.dropped) return [...this.kept];
    return [...this.kept, { file: this.file, message: `${this.dropped} more problems not listed: fix the ones above and check the file again` }];
  }
}

type ShapeFormat = Exclude<DatasetFormat, 'columns'>;

const SCHEMAS: Record<ShapeFormat, ZodType & { shape: Record<string, unknown> }> = {
  qa: QaLineSchema,
  chat: ChatLineSchema,
  sharegpt: ShareGptLineSchema,
  'prompt-completion': PromptCompletionLineSchema,
  alpaca: AlpacaLineSchema,
};
const KNOWN: Record<ShapeFormat, string[]> = Object.fromEntries(Object.entries(SCHEMAS).map(([f, s]) => [f, Object.keys(s.shape)])) as Record<
  ShapeFormat,
  string[]
>;
/** The fields that tell the shapes apart, for suggestions when a record matches none. */
const SIGNATURE = ['question', 'answer', 'messages', 'conversations', 'prompt', 'completion', 'instruction', 'output'];
/** Fields that must hold text: an empty CSV cell there is "empty", elsewhere it is "not given". */
const TEXT_REQUIRED = new Set(['question', 'answer', 'prompt', 'completion', 'instruction', 'output']);
const SHAPES =
  'use {"question","answer"}, {"messages":[...]}, {"conversations":[...]}, {"prompt","completion"} or {"instruction","input","output"}, or name the fields with `columns:` in the config';

/** Which shape a record is in, from the keys it has (a record, not a file: files are checked for mixing). */
export function detectFormat(obj: Record<string, unknown>): ShapeFormat | undefined {
  if ('messages' in obj) return 'chat';
  if ('conversations' in obj) return 'sharegpt';
  if ('question' in obj || 'answer' in obj) return 'qa';
  if ('prompt' in obj || 'completion' in obj) return 'prompt-completion';
  if ('instruction' in obj || 'output' in obj) return 'alpaca';
  return undefined;
}

const distances = new Map<string, number>();

/** Optimal string alignment distance (Damerau-Levenshtein with adjacent transpositions), case-blind. */
export function editDistance(a: string, b: string): number {
  // The same few field names come back on every record: remember them (a bounded number).
  const memo = `${a}\u0000${b}`;
  const known = distances.get(memo);
  if (known !== undefined) return known;
  const d = osa(a, b);
  if (distances.size < 10_000 && memo.length < 128) distances.set(memo, d);
  return d;
}

function osa(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known field `key` is a near-miss of, among those the record lacks: 1 edit for names of 4-5 letters, 2 from 6; none for shorter (`idx` is not a typo of `id`). */
export function nearMiss(key: string, candidates: readonly string[], present: Record<string, unknown>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    if (Object.hasOwn(present, c) || c === key) continue;
    const limit = c.length <= 3 ? 0 : c.length <= 5 ? 1 : 2;
    if (Math.abs(key.length - c.length) > limit) continue;
    const d = editDistance(key, c);
    if (d <= limit && d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

/** A record without a prototype: a field named `__proto__` is data like any other. */
export const record = (): Record<string, unknown> => Object.create(null);

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * How a reader's values are typed. `json`: as parsed. `text`: every cell a string (CSV, TSV): an
 * empty cell is "not given" except for required text, `aliases` may be a JSON list or `|`-separated,
 * `meta` a JSON object. `typed`: columnar (Parquet, Arrow): a null cell is "not given".
 */
export type ValueKind = 'json' | 'text' | 'typed';

export interface CheckerOptions {
  columns?: Columns;
  kind: ValueKind;
  /** What one record is called in messages: "line", "element", "row". */
  noun: string;
}

type Normalised = { id?: string; question: string; answer: string; aliases?: string[]; meta?: Record<string, unknown> };

export class RecordChecker {
  format?: DatasetFormat;
  private formatWhere: Where = {};
  private readonly seenIds = new Map<string, number>();
  private readonly extraFields = new Set<string>();

  constructor(
    private readonly sink: ProblemSink,
    private readonly opts: CheckerOptions,
  ) {
    if (opts.columns) this.format = 'columns';
  }

  private get tabular(): boolean {
    return this.opts.kind !== 'json';
  }

  /**
   * For a table (CSV, Parquet, Arrow): checks the column names once, so that a shape or mapping
   * problem is reported where the columns are named, not on every row. False: stop reading.
   */
  checkColumns(names: string[], where: Where): boolean {
    const cols = this.opts.columns;
    const at = { ...where };
    const present = Object.fromEntries(names.map((n) => [n, true]));
    const list = names.join(', ');
    if (cols) {
      // question and answer must be there; a missing optional column is only noticed (an eval
      // file read through the same mapping may have no aliases).
      let ok = true;
      for (const [field, c] of Object.entries(stripUndefined(cols))) {
        if (Object.hasOwn(present, c)) continue;
        const near = names.find((n) => nearMiss(n, [c], {}));
        const hint = `${near ? ` (did you mean "${near}"?)` : ''} (the columns are: ${list})`;
        if (field === 'question' || field === 'answer') {
          this.sink.add({ ...at, field: c, message: `no such column, named by columns.${field}${hint}: check the columns: mapping` });
          ok = false;
        } else this.columnNotices.push(`columns.${field} names "${c}", which is not a column${hint}: no ${field} are read`);
      }
      return ok;
    }
    const format = detectFormat(present);
    const known = format ? KNOWN[format] : SIGNATURE;
    const typos = names.map((n) => [n, known.includes(n) ? undefined : nearMiss(n, known, present)] as const).filter(([, s]) => s);
    for (const [n, s] of typos) this.sink.add({ ...at, field: n, message: `unknown column: did you mean "${s}"? rename it` });
    if (typos.length) return false;
    if (!format) {
      this.sink.add({ ...at, message: `unknown format: ${SHAPES} (the columns are: ${list})` });
      return false;
    }
    this.format = format;
    this.formatWhere = at;
    this.tableFormat = format;
    return true;
  }
  private tableFormat?: ShapeFormat;
  private readonly columnNotices: string[] = [];

  /** Validates and normalises one record; undefined (and its problems collected) when it is refused. */
  check(value: unknown, where: Where): Item | undefined {
    if (!isPlainObject(value)) {
      this.sink.add({
        ...where,
        message: `not a JSON object (got ${describeValue(value)}): write each ${this.opts.noun} as an object such as {"question": "...", "answer": "..."}`,
      });
      return undefined;
    }
    const obj = this.prepare(value, where);
    if (!obj) return undefined;
    const norm = this.opts.columns ? this.mapped(obj, where, this.opts.columns) : this.shaped(obj, where);
    return norm && this.finish(norm, where);
  }

  /** Notices for the whole file (one line each), after the last record. */
  notices(file: string): string[] {
    const out = this.columnNotices.map((m) => `${file}: ${m}`);
    const n = this.extraFields.size;
    if (!n) return out;
    const what = this.tabular ? 'column' : 'field';
    const names = [...this.extraFields];
    const list = names.length > 20 ? `${names.slice(0, 20).join(', ')} and ${names.length - 20} more` : names.join(', ');
    const count = n >= 1000 ? 'at least 1000' : String(n);
    return [...out, `${file}: ${count} ${what}${n > 1 ? 's' : ''} not used by slearn ${n > 1 ? 'are' : 'is'} kept under meta: ${list}`];
  }

  /** Turns table cells into what a JSON record would hold. */
  private prepare(value: Record<string, unknown>, where: Where): Record<string, unknown> | undefined {
    if (this.opts.kind === 'json') return value;
    const obj = record();
    const cols = this.opts.columns;
    const required = cols ? new Set([cols.question, cols.answer]) : TEXT_REQUIRED;
    const aliasesCol = cols?.aliases ?? 'aliases';
    const metaCol = cols?.meta ?? 'meta';
    let ok = true;
    for (const [k, v] of Object.entries(value)) {
      if (v === null || v === undefined) continue;
      if (this.opts.kind === 'typed') {
        obj[k] = v;
        continue;
      }
      const s = v as string;
      if (s === '' && !required.has(k)) continue;
      if (k === aliasesCol) {
        const list = parseAliasesCell(s);
        if (typeof list === 'string') {
          this.sink.add({ ...where, field: k, message: list });
          ok = false;
        } else obj[k] = list;
      } else if (k === metaCol) {
        let m: unknown;
        try {
          m = JSON.parse(s);
        } catch {
          m = undefined;
        }
        if (!isPlainObject(m)) {
          this.sink.add({
            ...where,
            field: k,
            message: 'must be a JSON object such as {"source": "manual"}: write it so, or rename the column to keep it as text',
          });
          ok = false;
        } else obj[k] = m;
      } else obj[k] = s;
    }
    return ok ? obj : undefined;
  }

  /** A record in one of the known shapes, detected from its keys. */
  private shaped(obj: Record<string, unknown>, where: Where): Normalised | undefined {
    const format = this.tableFormat ?? detectFormat(obj);
    if (!format) {
      const typos = Object.keys(obj)
        .map((k) => [k, nearMiss(k, SIGNATURE, obj)] as const)
        .filter(([, s]) => s);
      if (typos.length) for (const [k, s] of typos) this.sink.add({ ...where, field: k, message: `unknown field: did you mean "${s}"? rename it` });
      else this.sink.add({ ...where, message: `unknown format: ${SHAPES}` });
      return undefined;
    }
    if (!this.format) {
      this.format = format;
      this.formatWhere = where;
    } else if (format !== this.format) {
      this.sink.add({
        ...where,
        message: `mixed formats: this ${this.opts.noun} is ${format} but the file is ${this.format} (from ${describeWhere(this.formatWhere)}); use one format per file`,
      });
      return undefined;
    }
    const known = KNOWN[format];
    const fields = record();
    const extra = record();
    const suggested = new Set<string>();
    let typo = false;
    for (const [k, v] of Object.entries(obj)) {
      if (known.includes(k)) {
        fields[k] = v;
        continue;
      }
      // A table's column names were checked once, by checkColumns.
      const s = this.tabular ? undefined : nearMiss(k, known, obj);
      if (s) {
        this.sink.add({ ...where, field: k, message: `unknown field: did you mean "${s}"? rename it` });
        suggested.add(s);
        typo = true;
      } else extra[k] = v;
    }
    const parsed = SCHEMAS[format].safeParse(fields);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        // "answer: missing" says nothing that "anwser: did you mean answer?" did not.
        if (suggested.has(String(issue.path[0])) && fields[String(issue.path[0])] === undefined) continue;
        this.sink.add({ ...where, field: fieldPath(issue.path) || undefined, message: describeIssue(issue, fields) });
      }
      return undefined;
    }
    if (typo) return undefined;
    const norm = normalise(format, parsed.data);
    if (typeof norm === 'string') {
      this.sink.add({ ...where, field: format === 'sharegpt' ? 'conversations' : 'messages', message: norm });
      return undefined;
    }
    return this.withExtra(norm, extra);
  }

  /** A record whose fields are named by a `columns:` mapping. */
  private mapped(obj: Record<string, unknown>, where: Where, cols: Columns): Normalised | undefined {
    // Not named in the mapping, `id`, `aliases` and `meta` are still taken from columns of those names.
    const source: Record<string, string> = { id: 'id', aliases: 'aliases', meta: 'meta', ...stripUndefined(cols) };
    const byColumn = new Map(Object.entries(source).map(([field, col]) => [col, field]));
    const fields = record();
    const extra = record();
    const named = Object.values(stripUndefined(cols));
    const suggested = new Set<string>();
    for (const [k, v] of Object.entries(obj)) {
      const field = byColumn.get(k);
      if (field) {
        fields[field] = v;
        continue;
      }
      const s = nearMiss(k, named, obj);
      if (s && !this.tabular) {
        this.sink.add({ ...where, field: k, message: `unknown field: did you mean "${s}" (named in columns:)? rename it, or change the mapping` });
        suggested.add(s);
      } else extra[k] = v;
    }
    const parsed = QaLineSchema.safeParse(fields);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const col = source[String(issue.path[0])] ?? String(issue.path[0]);
        if (suggested.has(col) && fields[String(issue.path[0])] === undefined) continue;
        const path = [col, ...issue.path.slice(1)];
        this.sink.add({ ...where, field: fieldPath(path), message: describeIssue({ ...issue, path }, obj) });
      }
      return undefined;
    }
    if (suggested.size) return undefined;
    const v = parsed.data;
    const norm: Normalised = {
      id: v.id === undefined ? undefined : String(v.id).trim(),
      question: v.question.trim(),
      answer: v.answer.trim(),
      aliases: v.aliases?.map((a) => a.trim()),
      meta: v.meta,
    };
    return this.withExtra(norm, extra);
  }

  /** Fields slearn does not use go under meta; an explicit `meta` object wins on a clash. */
  private withExtra(norm: Normalised, extra: Record<string, unknown>): Normalised {
    const keys = Object.keys(extra);
    if (!keys.length) return norm;
    // Names are remembered for the notice, up to a bound (a file may have a new key on every line).
    for (const k of keys) if (this.extraFields.size < 1000) this.extraFields.add(k);
    return { ...norm, meta: { ...extra, ...(norm.meta ?? {}) } };
  }

  private finish(norm: Normalised, where: Where): Item | undefined {
    const at = where.line ?? where.row ?? 0;
    let id = norm.id;
    if (id !== undefined) {
      const first = this.seenIds.get(id);
      if (first !== undefined) {
        const firstWhere = where.line !== undefined ? `line ${first}` : `row ${first}`;
        this.sink.add({ ...where, field: 'id', message: `duplicate id "${id}" (first on ${firstWhere}): give each item its own id` });
        return undefined;
      }
    } else {
      // Content-derived ids stay stable when a growing dataset is re-run on a schedule.
      id = `q-${createHash('sha256').update(norm.question).digest('hex').slice(0, 12)}`;
      if (this.seenIds.has(id)) id = `${id}-${at}`;
    }
    this.seenIds.set(id, at);
    const item: Item = { id, question: norm.question, answer: norm.answer };
    if (norm.aliases?.length) item.aliases = norm.aliases;
    if (norm.meta && Object.keys(norm.meta).length) item.meta = norm.meta;
    return item;
  }
}

function stripUndefined<T extends object>(o: T): Record<string, string> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** A CSV cell of aliases: a JSON list (`["N","nitrogen"]`) or values separated by `|` (`N|nitrogen`). */
function parseAliasesCell(s: string): string[] | string {
  const t = s.trim();
  if (t.startsWith('[')) {
    try {
      const v = JSON.parse(t);
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.filter((x) => x.trim());
    } catch {
      /* reported below */
    }
    return 'not a JSON list of strings: write the aliases as ["N", "nitrogen"], or separate them with | (N|nitrogen)';
  }
  return t
    .split('|')
    .map((a) => a.trim())
    .filter(Boolean);
}

function normalise(format: ShapeFormat, v: any): Normalised | string {
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
    case 'sharegpt': {
      const turns = v.conversations as { from: string; value: string }[];
      const last = turns[turns.length - 1];
      if (last.from !== 'gpt' && last.from !== 'assistant')
        return `the last turn is from "${last.from}": end with the "gpt" turn that holds the reference answer`;
      const human = [...turns.slice(0, -1)].reverse().find((t) => t.from === 'human' || t.from === 'user');
      if (!human) return 'no "human" turn before the "gpt" answer: add the question as a "human" turn';
      if (!human.value.trim()) return 'the human turn is empty: write the question';
      if (!last.value.trim()) return 'the gpt turn is empty: write the reference answer';
      return { ...base, question: human.value.trim(), answer: last.value.trim() };
    }
  }
}
