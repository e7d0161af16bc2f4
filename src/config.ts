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

/**
 * Keys earlier versions of the schema had, and what replaced them: a config written for an older
 * slearn is told what to write instead of "unknown key".
 */
export const RETIRED_KEYS: Record<string, string> = {
  'filter.knownThreshold':
    'removed: items are chosen by knowledge level now; use `filter.trainOn` (default [weaklyKnown, unknown]: what the greedy answer got wrong)',
  'filter.replayKnownFraction': 'renamed: use `filter.replayFraction` (the share of known items replayed against forgetting)',
  'train.extraArgs':
    "removed: the trainer's options are keys of `train` now (loraDropout, loraTargets, batchSize, gradientAccumulation, maxSeqLen, packing, ...): set them there",
};

/** A config file parsed as YAML (JSON is YAML), with the line of every node for the problems found later. */
class ConfigDocument {
  private readonly lines = new LineCounter();
  readonly doc: ReturnType<typeof parseDocument>;

  constructor(
    readonly file: string,
    text: string,
  ) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
  }

  /** Reads `file`; a missing file, a syntax error or a document that is not a mapping is refused here, located. */
  static read(file: string): { document: ConfigDocument; value: Record<string, unknown> } {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
    } catch {
      throw new InvalidInput([{ file, message: 'config file not found: check the path' }]);
    }
    const document = new ConfigDocument(file, text);
    const { doc, lines } = document;
    if (doc.errors.length) {
      throw new InvalidInput(
        doc.errors.map((e) => ({
          file,
          line: e.linePos?.[0]?.line ?? (e.pos?.[0] !== undefined ? lines.linePos(e.pos[0]).line : undefined),
          message: `not valid YAML/JSON (${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}): fix the syntax on this line`,
        })),
      );
    }
    const value = doc.toJS();
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new InvalidInput([
        {
          file,
          line: 1,
          message: 'the config must be a mapping of keys such as `name: ...`, `dataset: ...`, `model: ...`: see examples/agriculture/slearn.yaml',
        },
      ]);
    }
    return { document, value };
  }

  /** The line of a field: its value's node, or for an unknown key the key itself (else the nearest enclosing node). */
  lineOf(path: readonly PropertyKey[], key?: string): number | undefined {
    const node: any = path.length ? this.doc.getIn(path as (string | number)[], true) : this.doc.contents;
    if (key && isMap(node)) {
      const pair: any = (node.items as any[]).find((p) => p.key?.value === key);
      if (pair?.key?.range) return this.lines.linePos(pair.key.range[0]).line;
    }
    if (node?.range) return this.lines.linePos(node.range[0]).line;
    return path.length ? this.lineOf(path.slice(0, -1)) : 1;
  }

  problem(path: readonly PropertyKey[], message: string, key?: string): Problem {
    const full = key ? [...path, key] : path;
    return { file: this.file, line: this.lineOf(path, key), field: fieldPath(full), message };
  }
}

/** The schema's verdict on `raw`: the config, or every problem located (retired keys with what replaced them). */
function validate(document: ConfigDocument, raw: unknown): Config {
  const parsed = ConfigSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const problems: Problem[] = [];
  for (const issue of parsed.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const retired = RETIRED_KEYS[[...issue.path, key].join('.')];
        problems.push(document.problem(issue.path, retired ?? 'unknown key (a typo?): remove it or check the spelling', key));
      }
    } else problems.push(document.problem(issue.path, describeIssue(issue, raw)));
  }
  throw new InvalidInput(problems);
}

/** Paths made absolute (relative to the config file) and the store made canonical: problems for what cannot be. */
function resolveLocations(document: ConfigDocument, config: Config, fallbackStore: string): { store: string; problems: Problem[] } {
  const dir = dirname(resolve(document.file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  config.dataset = abs(config.dataset);
  if (config.eval) config.eval = abs(config.eval);
  if (config.train.chatTemplate) config.train.chatTemplate = abs(config.train.chatTemplate);
  const problems: Problem[] = [];
  const store = normaliseStoreUrl(config.artifacts ?? fallbackStore, config.artifacts ? dir : process.cwd());
  if (typeof store !== 'string') {
    // Say what to do, not only what is wrong (the S3 rules alone leave the user guessing).
    const message = /\b(use|fix|change)\b/.test(store.error) ? store.error : `${store.error}: fix the location in \`artifacts\``;
    problems.push(document.problem(['artifacts'], message));
  } else if (config.artifacts) config.artifacts = store;
  for (const [field, p] of [
    ['dataset', config.dataset],
    ['eval', config.eval],
    ['train.chatTemplate', config.train.chatTemplate],
  ] as const) {
    if (p && !existsSync(p)) problems.push(document.problem([field], `file not found: ${p}: check the path (relative paths are relative to the config file)`));
  }
  return { store: typeof store === 'string' ? store : '', problems };
}

/** The variables named by apiKeyEnv that are not set in `env`. */
function missingKeys(document: ConfigDocument, config: Config, env: NodeJS.ProcessEnv): Problem[] {
  const endpoints: [string, Config['model'] | undefined][] = [
    ['model', config.model],
    ['grader.model', config.grader.type === 'judge' ? config.grader.model : undefined],
  ];
  return endpoints
    .filter(([, ep]) => ep?.apiKeyEnv && !env[ep.apiKeyEnv])
    .map(([field, ep]) => document.problem([...field.split('.'), 'apiKeyEnv'], `environment variable ${ep!.apiKeyEnv} is not set: export it before running`));
}

/**
 * Parses and validates a config file: read it, merge the overrides, check it against the schema,
 * resolve its paths and store, and check the files and keys it names. Every problem is located at
 * its YAML/JSON line, all of them at once.
 */
export function loadConfig(file: string, opts: LoadOptions = {}): LoadedConfig {
  const { document, value } = ConfigDocument.read(file);
  const raw = opts.overrides ? mergePatch(value, opts.overrides) : value;
  const config = validate(document, raw);
  const env = opts.env ?? process.env;
  const located = resolveLocations(document, config, opts.defaultStore ?? defaultStore(env));
  const problems = [...located.problems, ...(opts.checkKeys !== false ? missingKeys(document, config, env) : [])];
  if (problems.length) throw new InvalidInput(problems);
  return { config, file: resolve(file), store: located.store };
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
