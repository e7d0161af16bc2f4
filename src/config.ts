import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, LineCounter, parseDocument } from 'yaml';
import { ConfigSchema, type Config } from './schemas/config';
import { InvalidInput } from './errors';
import { describeIssue, fieldPath, type Problem } from './problems';
import { scanDataset } from './dataset/read';
import { normalise } from './grading/match';
import { defaultStore } from './paths';
import { normaliseStoreUrl } from './store/location';

export interface LoadedConfig {
  config: Config;
  file: string;
  /** Canonical URL of the artifact store the config names (or the default one). */
  store: string;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Merged over the file before validation (the demo's endpoint, a baseline's settings). */
  overrides?: Record<string, unknown>;
  /** Where the store is when the config does not say: `$SLEARN_HOME/artifacts` by default (see paths.ts). */
  defaultStore?: string;
  /** Check that the variables named by apiKeyEnv are set here (the CLI does; a worker checks its policy instead). */
  checkKeys?: boolean;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7386 merge patch: objects merge, everything else replaces, null deletes. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Parses and validates a config file; every problem is located at its YAML/JSON line. */
export function loadConfig(file: string, opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const problems: Problem[] = [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch {
    throw new InvalidInput([{ file, message: 'config file not found: check the path' }]);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new InvalidInput(
      doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0]?.line ?? (e.pos?.[0] !== undefined ? lineCounter.linePos(e.pos[0]).line : undefined),
        message: `not valid YAML/JSON (${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}): fix the syntax on this line`,
      })),
    );
  }
  const fromFile = doc.toJS();
  if (fromFile === null || typeof fromFile !== 'object' || Array.isArray(fromFile)) {
    throw new InvalidInput([
      {
        file,
        line: 1,
        message: 'the config must be a mapping of keys such as `name: ...`, `dataset: ...`, `model: ...`: see examples/agriculture/slearn.yaml',
      },
    ]);
  }
  const raw = opts.overrides ? mergePatch(fromFile, opts.overrides) : fromFile;

  // Lines for fields: the value's node, or for an unknown key the key itself.
  const lineOf = (path: readonly PropertyKey[], key?: string): number | undefined => {
    const node: any = path.length ? doc.getIn(path as (string | number)[], true) : doc.contents;
    if (key && isMap(node)) {
      const pair: any = (node.items as any[]).find((p) => p.key?.value === key);
      if (pair?.key?.range) return lineCounter.linePos(pair.key.range[0]).line;
    }
    if (node?.range) return lineCounter.linePos(node.range[0]).line;
    return path.length ? lineOf(path.slice(0, -1)) : 1;
  };

  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push({
            file,
            line: lineOf(issue.path, key),
            field: fieldPath([...issue.path, key]),
            message: 'unknown key (a typo?): remove it or check the spelling',
          });
        }
      } else {
        problems.push({ file, line: lineOf(issue.path), field: fieldPath(issue.path), message: describeIssue(issue, raw) });
      }
    }
    throw new InvalidInput(problems);
  }
  const config = parsed.data;
  const dir = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  config.dataset = abs(config.dataset);
  if (config.eval) config.eval = abs(config.eval);

  const store = normaliseStoreUrl(config.artifacts ?? opts.defaultStore ?? defaultStore(env), config.artifacts ? dir : process.cwd());
  if (typeof store !== 'string') {
    // Say what to do, not only what is wrong (the S3 rules alone leave the user guessing).
    const message = /\b(use|fix|change)\b/.test(store.error) ? store.error : `${store.error}: fix the location in \`artifacts\``;
    problems.push({ file, line: lineOf(['artifacts']), field: 'artifacts', message });
  } else if (config.artifacts) config.artifacts = store;

  for (const [field, p] of [
    ['dataset', config.dataset],
    ['eval', config.eval],
  ] as const) {
    if (p && !existsSync(p))
      problems.push({ file, line: lineOf([field]), field, message: `file not found: ${p}: check the path (relative paths are relative to the config file)` });
  }
  if (opts.checkKeys !== false) {
    const endpoints: [string, Config['model'] | undefined][] = [
      ['model', config.model],
      ['grader.model', config.grader.type === 'judge' ? config.grader.model : undefined],
    ];
    for (const [field, ep] of endpoints) {
      if (ep?.apiKeyEnv && !env[ep.apiKeyEnv]) {
        problems.push({
          file,
          line: lineOf([...field.split('.'), 'apiKeyEnv']),
          field: `${field}.apiKeyEnv`,
          message: `environment variable ${ep.apiKeyEnv} is not set: export it before running`,
        });
      }
    }
  }
  if (problems.length) throw new InvalidInput(problems);
  return { config, file: resolve(file), store: store as string };
}

/** The line of a key in a config file (for problems found after loading, e.g. an unreachable endpoint). */
export function configLine(file: string, path: readonly (string | number)[]): number | undefined {
  try {
    const lineCounter = new LineCounter();
    const doc = parseDocument(readFileSync(file, 'utf8').replace(/^\uFEFF/, ''), { lineCounter });
    for (let p = [...path]; p.length; p = p.slice(0, -1)) {
      const node: any = doc.getIn(p, true);
      if (node?.range) return lineCounter.linePos(node.range[0]).line;
    }
  } catch {
    /* the line is a courtesy */
  }
  return undefined;
}

const questionKey = (q: string) => createHash('sha256').update(normalise(q)).digest('base64').slice(0, 16);

export interface Validated extends LoadedConfig {
  items: number;
  evalItems?: number;
  notices: string[];
}

/**
 * Config plus every dataset it names: all problems at once, or nothing. An eval file that shares
 * an item with the dataset (same id, or the same question once normalised) is refused, naming both
 * lines: evaluating on training data would report a gain that is not there.
 */
export async function validateAll(file: string, opts: LoadOptions = {}): Promise<Validated> {
  const loaded = loadConfig(file, opts);
  const { config } = loaded;
  const problems: Problem[] = [];
  const notices: string[] = [];
  const ids = new Map<string, string>();
  const questions = new Map<string, string>();
  const where = (f: string, w: { line?: number; row?: number }) => (w.line !== undefined ? `${f}:${w.line}` : w.row !== undefined ? `${f}: row ${w.row}` : f);
  const ds = await scanDataset(
    config.dataset,
    (item, w) => {
      if (!config.eval) return;
      ids.set(item.id, where(config.dataset, w));
      questions.set(questionKey(item.question), where(config.dataset, w));
    },
    { columns: config.columns },
  );
  problems.push(...ds.problems);
  notices.push(...ds.notices);
  let evalItems: number | undefined;
  if (config.eval) {
    const evalFile = config.eval;
    const ev = await scanDataset(
      evalFile,
      (item, w) => {
        const same = ids.get(item.id) ?? questions.get(questionKey(item.question));
        if (same && problems.length < 200) {
          problems.push({
            file: evalFile,
            ...w,
            field: ids.has(item.id) ? 'id' : 'question',
            message: `the same item is in the dataset (${same}): remove it from one of them (never evaluate on training data)`,
          });
        }
      },
      { columns: config.columns },
    );
    problems.push(...ev.problems);
    notices.push(...ev.notices);
    evalItems = ev.count;
  }
  if (problems.length) throw new InvalidInput(problems);
  return { ...loaded, items: ds.count, ...(evalItems !== undefined ? { evalItems } : {}), notices };
}
