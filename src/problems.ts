/** One thing wrong with the user's input, located so it can be fixed without guessing. */
export interface Problem {
  file: string;
  line?: number;
  /** For files without lines (Parquet, Arrow): the row, counted from 1 like lines (`ds[row - 1]` in Python). */
  row?: number;
  field?: string;
  message: string;
}

/** `FILE:LINE: field: message`, or `FILE: row N: field: message` for a row of a Parquet or Arrow file. */
export function formatProblem(p: Problem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}` : p.row !== undefined ? `${p.file}: row ${p.row}` : p.file;
  return p.field ? `${where}: ${p.field}: ${p.message}` : `${where}: ${p.message}`;
}

export function fieldPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** What a value is, for messages: `number 1.5`, `string "abc"`, `an array`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v) ?? (typeof v === 'symbol' ? v.toString() : typeof v === 'bigint' ? v.toString() : 'a function');
  return `${typeof v} ${s.length > 40 ? `${s.slice(0, 37)}...` : s}`;
}

export function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: any = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[k as any];
  }
  return v;
}

const WANT: Record<string, string> = {
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  boolean: 'true or false',
};
const want = (expected: unknown) => WANT[String(expected)] ?? String(expected);
const ACTION_FIRST = /^(add|give|use|remove|set|write|choose|check)\b/i;

/** Issue fields zod attaches beyond code, path and message (zod 4). */
interface IssueLike {
  code: string;
  path: readonly PropertyKey[];
  message: string;
  expected?: unknown;
  minimum?: number | bigint;
  maximum?: number | bigint;
  inclusive?: boolean;
  origin?: string;
  values?: unknown[];
  options?: unknown[];
  errors?: IssueLike[][];
  format?: string;
}

/**
 * Turns a zod issue into a message that says what is wrong and what to do, instead of zod's
 * generic "Invalid input". `root` is the parsed input, to show the offending value.
 */
export function describeIssue(issue: IssueLike, root: unknown): string {
  const v = valueAt(root, issue.path);
  const key = String(issue.path[issue.path.length - 1] ?? 'value');
  // Never echo what may be a secret (an API key pasted where its variable's name belongs).
  const got = /api_?key|secret|password|^token$/i.test(key) ? 'a value not shown here' : describeValue(v);
  const custom = !/^(Invalid|Too small|Too big)/.test(issue.message);
  const keepCustom = () => (ACTION_FIRST.test(issue.message) ? issue.message : `${issue.message} (got ${got}): change the value`);
  const choices = (xs: unknown[]) => xs.map((x) => JSON.stringify(x)).join(', ');
  switch (issue.code) {
    case 'invalid_type':
      if (v === undefined) return `missing (required): add "${key}" (${want(issue.expected)})`;
      return custom ? keepCustom() : `must be ${want(issue.expected)} (got ${got}): change the value`;
    case 'too_small':
    case 'too_big': {
      if (custom) return keepCustom();
      const small = issue.code === 'too_small';
      const n = Number(small ? issue.minimum : issue.maximum);
      if (issue.origin === 'string')
        return small && n <= 1 ? 'must not be empty: give a value' : `must have ${small ? 'at least' : 'at most'} ${n} characters: change the value`;
      if (issue.origin === 'array' || issue.origin === 'set')
        return `must have ${small ? 'at least' : 'at most'} ${n} entries (got ${(v as unknown[])?.length ?? 0}): change the list`;
      const bound = small ? (issue.inclusive ? `at least ${n}` : `greater than ${n}`) : issue.inclusive ? `at most ${n}` : `less than ${n}`;
      return `must be ${bound} (got ${got}): change the value`;
    }
    case 'invalid_union': {
      if (issue.options?.length) {
        if (v === undefined) return `missing (required): add "${key}" (one of ${choices(issue.options)})`;
        return `must be one of ${choices(issue.options)} (got ${got}): choose one`;
      }
      const branches = (issue.errors ?? []).map((b) => b[0]).filter(Boolean);
      const specific = branches.find((b) => b.code !== 'invalid_type' && !/^(Invalid|Too small|Too big)/.test(b.message));
      if (specific) return `${specific.message} (got ${got}): change the value`;
      const wanted = [...new Set(branches.filter((b) => b.code === 'invalid_type').map((b) => want(b.expected)))];
      if (v === undefined) return `missing (required): add "${key}"`;
      return wanted.length ? `must be ${wanted.join(' or ')} (got ${got}): change the value` : `not accepted (got ${got}): change the value`;
    }
    case 'invalid_value':
      return `must be one of ${choices(issue.values ?? [])} (got ${got}): choose one`;
    case 'invalid_format':
      return custom ? keepCustom() : `must be a valid ${issue.format ?? 'value'} (got ${got}): change the value`;
    default:
      return custom ? keepCustom() : `${issue.message} (got ${got}): change the value`;
  }
}
