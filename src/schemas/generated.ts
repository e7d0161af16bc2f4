import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigSchema } from './config';
import { contractJson } from './trainer';

const ROOT = join(__dirname, '..', '..');

/** The config's JSON Schema, for editors (`# yaml-language-server: $schema=...`) and `slearn schema`. */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(ConfigSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...schema,
    $id: 'https://slearn.dev/schema/slearn.schema.json',
    title: 'slearn config',
    description: 'A self-learning run: dataset, model endpoint, grading, filtering, training and promotion.',
  };
}

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  items?: JsonSchema;
  minimum?: number;
  maximum?: number;
  required?: string[];
};

function typeOf(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === 'array' && s.items) return `list of ${typeOf(s.items)}`;
  if (s.anyOf) return s.anyOf.map(typeOf).join(' or ');
  return Array.isArray(s.type) ? s.type.join(' or ') : (s.type ?? 'any');
}

/** The README's configuration reference: one row per key, from the JSON Schema (so it cannot drift). */
export function configReference(): string {
  const rows: string[] = ['| key | type | default | what it does |', '|---|---|---|---|'];
  const cell = (v: unknown) => (v === undefined ? '' : `\`${JSON.stringify(v)}\``);
  const walk = (schema: JsonSchema, path: string, required: string[]) => {
    for (const [key, raw] of Object.entries(schema.properties ?? {})) {
      const p = path ? `${path}.${key}` : key;
      const s = raw;
      const variants = s.oneOf ?? (s.anyOf?.every((x) => x.properties) ? s.anyOf : undefined);
      const isObject = s.properties && s.type === 'object';
      const def = isObject || variants ? undefined : s.default;
      const req = required.includes(key) && s.default === undefined ? ' (required)' : '';
      rows.push(
        `| \`${p}\` | ${variants ? 'one of the shapes below' : isObject ? 'mapping' : typeOf(s)}${req} | ${cell(def)} | ${(s.description ?? '').replace(/\|/g, '\\|')} |`,
      );
      if (isObject) walk(s, p, s.required ?? []);
      for (const v of variants ?? []) {
        const tag = Object.entries(v.properties ?? {}).find(([, x]) => x.const !== undefined);
        walk(v, tag ? `${p}[${tag[0]}=${String(tag[1].const)}]` : p, v.required ?? []);
      }
    }
  };
  const root = configJsonSchema() as JsonSchema;
  walk(root, '', root.required ?? []);
  return rows.join('\n');
}

const BEGIN = '<!-- config-reference:begin (generated from src/schemas/config.ts by `npm run schemas`) -->';
const END = '<!-- config-reference:end -->';

/** The README with its configuration reference replaced by the generated one. */
export function readmeWithReference(readme: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md has no "${BEGIN}" ... "${END}" section`);
  return `${readme.slice(0, a + BEGIN.length)}\n${configReference()}\n${readme.slice(b)}`;
}

/** Every generated file, by path relative to the project root, with the text it must hold. */
export function generatedFiles(root = ROOT): Record<string, string> {
  return {
    [join(root, 'trainer', 'slearn_trainer', 'contract.json')]: JSON.stringify(contractJson(), null, 2) + '\n',
    [join(root, 'schema', 'slearn.schema.json')]: JSON.stringify(configJsonSchema(), null, 2) + '\n',
    [join(root, 'README.md')]: readmeWithReference(readFileSync(join(root, 'README.md'), 'utf8')),
  };
}
