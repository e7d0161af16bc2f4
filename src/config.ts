import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, LineCounter, parseDocument } from 'yaml';
import { Config, ConfigSchema } from './schemas/config';
import { describeIssue, fieldPath, InvalidInputError, Problem } from './problems';
import { readDataset } from './dataset/read';

export interface LoadedConfig {
  config: Config;
  file: string;
}

/** Parses and validates a config file; every problem is located at its YAML/JSON line. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const problems: Problem[] = [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch {
    throw new InvalidInputError([{ file, message: 'config file not found: check the path' }]);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new InvalidInputError(
      doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0]?.line ?? (e.pos?.[0] !== undefined ? lineCounter.linePos(e.pos[0]).line : undefined),
        message: `not valid YAML/JSON (${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}): fix the syntax on this line`,
      })),
    );
  }
  const raw = doc.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidInputError([{ file, line: 1, message: 'the config must be a mapping of keys such as `name: ...`, `dataset: ...`, `model: ...`: see examples/agriculture/slearn.yaml' }]);
  }

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
          problems.push({ file, line: lineOf(issue.path, key), field: fieldPath([...issue.path, key]), message: 'unknown key (a typo?): remove it or check the spelling' });
        }
      } else {
        problems.push({ file, line: lineOf(issue.path), field: fieldPath(issue.path), message: describeIssue(issue, raw) });
      }
    }
    throw new InvalidInputError(problems);
  }
  const config = parsed.data;
  const dir = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  config.dataset = abs(config.dataset);
  if (config.eval) config.eval = abs(config.eval);
  if (config.artifacts) config.artifacts = abs(config.artifacts);

  for (const [field, p] of [['dataset', config.dataset], ['eval', config.eval]] as const) {
    if (p && !existsSync(p)) problems.push({ file, line: lineOf([field]), field, message: `file not found: ${p}: check the path (relative paths are relative to the config file)` });
  }
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
  if (problems.length) throw new InvalidInputError(problems);
  return { config, file: resolve(file) };
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

/** Config plus every dataset it names: all problems at once, or nothing. */
export function validateAll(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig & { items: number; evalItems: number } {
  const loaded = loadConfig(file, env);
  const problems: Problem[] = [];
  const ds = readDataset(loaded.config.dataset);
  problems.push(...ds.problems);
  let evalItems = ds.items.length;
  if (loaded.config.eval) {
    const ev = readDataset(loaded.config.eval);
    problems.push(...ev.problems);
    evalItems = ev.items.length;
  }
  if (problems.length) throw new InvalidInputError(problems);
  return { ...loaded, items: ds.items.length, evalItems };
}
