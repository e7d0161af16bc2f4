/**
 * The shape of src/ as the TypeScript compiler reads it: which module imports which (static,
 * dynamic `import()` and `require()`, type-only imports included: a type shared by two layers lives
 * below both), the cycles in that graph, imports that run up the layer order, and function lengths.
 * Used by test/layers.test.ts; `npx tsx test/support/imports.ts [SRC]` prints a report of any tree.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import * as ts from 'typescript';

/**
 * The layers of src/, bottom first. A module may import from its own layer (without a cycle) or any
 * layer below; a folder name stands for everything under it. The report renderer sits below the
 * pipeline: the report step calls it, and it needs only schemas and metrics.
 */
export const SRC_LAYERS: readonly (readonly string[])[] = [
  ['schemas', 'errors.ts', 'problems.ts', 'metrics.ts', 'paths.ts', 'proc.ts', 'streams.ts'],
  ['store', 'temporal'],
  ['model'],
  ['dataset'],
  ['grading', 'report'],
  ['registry', 'config.ts'],
  ['pipeline'],
  ['activities'],
  ['workflows'],
  ['worker.ts', 'client.ts'],
  ['cli', 'demo.ts'],
];

export interface Edge {
  from: string;
  to: string;
}

/** Every .ts file under `dir`, relative to it, with '/' separators. */
export function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.ts') && !n.endsWith('.d.ts')) out.push(relative(dir, p).split(sep).join('/'));
    }
  };
  walk(dir);
  return out;
}

/** The module specifiers a file imports, as written. */
export function specifiers(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return info.importedFiles.map((f) => f.fileName);
}

/** Imports between files of `dir` (relative specifiers resolved as Node resolves them: X.ts, then X/index.ts). */
export function importGraph(dir: string): { files: string[]; edges: Edge[] } {
  const files = sourceFiles(dir);
  const known = new Set(files);
  const edges: Edge[] = [];
  for (const from of files) {
    for (const spec of specifiers(join(dir, from))) {
      if (!spec.startsWith('.')) continue;
      const base = relative(dir, resolve(dir, dirname(from), spec))
        .split(sep)
        .join('/');
      const to = [`${base}.ts`, `${base}/index.ts`, base].find((c) => known.has(c));
      if (to && to !== from) edges.push({ from, to });
    }
  }
  return { files, edges };
}

/** Groups of modules that import each other in a circle (Tarjan's strongly connected components of more than one module). */
export function cycles(graph: { files: string[]; edges: Edge[] }): string[][] {
  const next = new Map<string, string[]>(graph.files.map((f) => [f, []]));
  for (const e of graph.edges) next.get(e.from)!.push(e.to);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const f of graph.files) if (!index.has(f)) visit(f);
  return out;
}

/** The layer of a file (its index in `layers`), or undefined when no entry names it. */
export function layerOf(file: string, layers: readonly (readonly string[])[] = SRC_LAYERS): number | undefined {
  const i = layers.findIndex((names) => names.some((n) => file === n || file.startsWith(`${n}/`)));
  return i < 0 ? undefined : i;
}

/** Imports from a module to one in a higher layer. */
export function upwardImports(graph: { edges: Edge[] }, layers: readonly (readonly string[])[] = SRC_LAYERS): Edge[] {
  return graph.edges.filter((e) => (layerOf(e.from, layers) ?? -1) < (layerOf(e.to, layers) ?? -1));
}

/** Imports of a package's internal files (`@temporalio/common/lib/...`): not part of its public API, they move without notice. */
export function internalImports(dir: string): Edge[] {
  return sourceFiles(dir).flatMap((from) =>
    specifiers(join(dir, from))
      .filter((s) => /^(@[^/]+\/)?[^./][^/]*\/lib\//.test(s))
      .map((to) => ({ from, to })),
  );
}

export interface FunctionLength {
  file: string;
  name: string;
  lines: number;
}

/** Every function, method and arrow function in `file` with its length in lines (its signature to its closing brace). */
export function functionLengths(dir: string, file: string): FunctionLength[] {
  const text = readFileSync(join(dir, file), 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const out: FunctionLength[] = [];
  const nameOf = (node: ts.Node): string => {
    const named = node as { name?: ts.Node };
    if (named.name && ts.isIdentifier(named.name)) return named.name.text;
    if (ts.isConstructorDeclaration(node)) return 'constructor';
    const parent = node.parent;
    if (parent && (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) && ts.isIdentifier(parent.name))
      return parent.name.text;
    if (parent && ts.isPropertyAssignment(parent) && ts.isStringLiteral(parent.name)) return parent.name.text;
    return '(anonymous)';
  };
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && (node as { body?: ts.Node }).body) {
      const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
      const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line;
      out.push({ file, name: nameOf(node), lines: end - start + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** Functions longer than `max` lines in the files under `dirs` (relative to `dir`). */
export function longFunctions(dir: string, dirs: string[], max: number): FunctionLength[] {
  return sourceFiles(dir)
    .filter((f) => dirs.some((d) => f.startsWith(`${d}/`)))
    .flatMap((f) => functionLengths(dir, f))
    .filter((f) => f.lines > max);
}

if (require.main === module) {
  const dir = resolve(process.argv[2] ?? join(__dirname, '..', '..', 'src'));
  const graph = importGraph(dir);
  const lines = (f: string) => readFileSync(join(dir, f), 'utf8').split('\n').length;
  const all = graph.files.flatMap((f) => functionLengths(dir, f)).sort((a, b) => b.lines - a.lines);
  console.log(`${graph.files.length} files, ${graph.edges.length} imports under ${dir}`);
  console.log('\nimport cycles:');
  for (const c of cycles(graph)) console.log(`  ${c.join(' <-> ')}`);
  console.log('\nimports up a layer:');
  for (const e of upwardImports(graph)) console.log(`  ${e.from} -> ${e.to}`);
  console.log('\nimports of package internals:');
  for (const e of internalImports(dir)) console.log(`  ${e.from} -> ${e.to}`);
  console.log('\nlongest functions:');
  for (const f of all.slice(0, 12)) console.log(`  ${String(f.lines).padStart(4)}  ${f.file} ${f.name}`);
  console.log('\nlongest files:');
  for (const f of graph.files.sort((a, b) => lines(b) - lines(a)).slice(0, 12)) console.log(`  ${String(lines(f)).padStart(4)}  ${f}`);
}
