/**
 * The bad-input corpus (test/bad-input): every malformed dataset or config is refused by the real
 * CLI with `FILE:LINE: field: message` lines that say what to do, exit code 1, no workflow started
 * and nothing written; BOMs, CRLF line ends and blank lines are accepted as if clean.
 *
 * Each case is a folder with the bad file(s) and a case.json:
 *   { "command": [...CLI args], "expect": [{ "file", "line" (null: none), "field"?, "message" (regex) }],
 *     "env"?: { NAME: value | null (unset) }, "generate"?: "10mb-line" | "latin1", "forbid"?: "text never printed",
 *     "maxSeconds"?: n }
 * `${DEAD_PORT}` in configs and env values becomes a loopback port nobody listens on.
 * Cases run in a copy of their folder, so a bug that writes next to the config cannot dirty the repository.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join, relative } from 'node:path';
import { readDataset } from '../src/dataset/read';
import { checkKey } from '../src/store/backend';
import { LocalBackend } from '../src/store/local';
import { Store } from '../src/store/store';
import { runPrefix } from '../src/store/steps';
import { freePort } from '../src/temporal/devServer';
import { ROOT, temporal, tempDir, waitFor } from './support/stack';

const CORPUS = join(__dirname, 'bad-input');
const CASES = join(CORPUS, 'cases');
const ACCEPTED = join(CORPUS, 'accepted');
const CLI = join(ROOT, 'bin', 'slearn.js');

interface Expected {
  file: string;
  line: number | null;
  field?: string;
  message: string;
}
interface Case {
  command: string[];
  expect?: Expected[];
  env?: Record<string, string | null>;
  generate?: '10mb-line' | 'latin1';
  forbid?: string;
  /** Refused within this time (e.g. not after a connection timeout). */
  maxSeconds?: number;
  note?: string;
}
interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  cwd: string;
  before: string[];
  after: string[];
  ms: number;
}

/** Each problem line says what to do, not only what is wrong. */
const TELLS_WHAT_TO_DO = /\b(add|remove|rename|use|check|re-save|shorten|split|give|export|start|fix|change|choose|write|see|end|set)\b/i;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** `FILE:LINE: field: message`, FILE as given on the command line or resolved (ending with the name). */
function lineRegex(e: Expected): RegExp {
  const line = e.line === null ? '' : `:${e.line}`;
  const field = e.field ? `${escape(e.field)}: ` : '';
  return new RegExp(`^(?:.*[/\\\\])?${escape(e.file)}${line}: ${field}(?:.*?)(?:${e.message})`);
}

const listCases = (dir: string) =>
  readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, 'case.json')))
    .sort()
    .map((name) => ({ name, spec: JSON.parse(readFileSync(join(dir, name, 'case.json'), 'utf8')) as Case }));

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const badCases = listCases(CASES);
const acceptedCases = listCases(ACCEPTED);

let work: string;
let slearnHome: string;
let deadPort: number;
let srv: Awaited<ReturnType<typeof temporal>>;
const outcomes = new Map<string, Outcome>();

function cli(args: string[], cwd: string, env: Record<string, string | null> = {}): Promise<Omit<Outcome, 'cwd' | 'before' | 'after'>> {
  const e: NodeJS.ProcessEnv = { ...process.env, TEMPORAL_ADDRESS: srv.address, SLEARN_HOME: slearnHome, NO_COLOR: '1' };
  for (const [k, v] of Object.entries(env)) {
    if (v === null) delete e[k];
    else e[k] = v.replaceAll('${DEAD_PORT}', String(deadPort));
  }
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    // An argument array, never a shell.
    const p = spawn(process.execPath, [CLI, ...args], { cwd, env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b) => out.push(b));
    p.stderr.on('data', (b) => err.push(b));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: Date.now() - t0 }));
  });
}

/** A copy of the case folder, with generated files and the dead port filled in. */
function prepare(from: string, name: string, spec: Case): string {
  const dir = join(work, name);
  cpSync(from, dir, { recursive: true });
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (/\.(ya?ml|json)$/.test(f) && f !== 'case.json') writeFileSync(p, readFileSync(p, 'utf8').replaceAll('${DEAD_PORT}', String(deadPort)));
  }
  const good = '{"question":"Which soil pH suits blueberries?","answer":"4.5 to 5.5"}\n';
  if (spec.generate === '10mb-line') {
    writeFileSync(join(dir, 'data.jsonl'), good + `{"question":"${'why '.repeat(2_621_440)}","answer":"x"}\n` + good.replace('blue', 'cran'));
  } else if (spec.generate === 'latin1') {
    writeFileSync(
      join(dir, 'data.jsonl'),
      Buffer.concat([Buffer.from(good), Buffer.from('{"question":"Caf\xe9 soil?","answer":"loam"}\n', 'latin1'), Buffer.from(good.replace('blue', 'cran'))]),
    );
  }
  return dir;
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (let t = queue.shift(); t !== undefined; t = queue.shift()) await fn(t);
    }),
  );
}

beforeAll(async () => {
  // The CLI under test is dist/: build it from the current sources.
  const t0 = Date.now();
  const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', ROOT], { encoding: 'utf8' });
  if (tsc.status !== 0) throw new Error(`tsc failed:\n${tsc.stdout}${tsc.stderr}`);
  work = tempDir('slearn-bad-input-');
  slearnHome = join(tempDir('slearn-home-'), 'home');
  deadPort = await freePort();
  const t1 = Date.now();
  srv = await temporal(tempDir('slearn-bad-input-temporal-'));
  const t2 = Date.now();
  if (process.env.BAD_INPUT_TIMES) console.log(`tsc ${t1 - t0} ms, temporal ${t2 - t1} ms`);
  const all = [...badCases.map((c) => ({ ...c, from: CASES })), ...acceptedCases.map((c) => ({ ...c, from: ACCEPTED, name: `accepted-${c.name}` }))];
  await pool(all, 3, async ({ name, spec, from }) => {
    const cwd = prepare(join(from, name.replace(/^accepted-/, '')), name, spec);
    const before = listFiles(cwd);
    const r = await cli(spec.command, cwd, spec.env);
    outcomes.set(name, { ...r, cwd, before, after: listFiles(cwd) });
  });
}, 300_000);

afterAll(async () => {
  if (process.env.BAD_INPUT_TIMES)
    console.log(
      [...outcomes]
        .map(([n, o]) => `${o.ms} ms ${n}`)
        .sort((a, b) => parseInt(b) - parseInt(a))
        .slice(0, 10)
        .join('\n'),
    );
  await srv?.stop();
});

describe('the corpus', () => {
  it('has at least 30 bad cases, each expecting at least one located problem', () => {
    expect(badCases.length).toBeGreaterThanOrEqual(30);
    for (const c of badCases) expect(c.spec.expect?.length).toBeGreaterThan(0);
    expect(acceptedCases.length).toBeGreaterThanOrEqual(3);
  });
});

describe('bad input is refused: exit 1, FILE:LINE: field: message with what to do, nothing written', () => {
  it.each(badCases.map((c) => [c.name, c.spec] as const))('%s', (name, spec) => {
    const o = outcomes.get(name)!;
    const lines = o.stderr.split('\n').filter(Boolean);
    const context = `\n--- ${name}: slearn ${spec.command.join(' ')} (exit ${o.code})\n${o.stderr}`;
    for (const e of spec.expect!) {
      const re = lineRegex(e);
      if (!lines.some((l) => re.test(l))) throw new Error(`no stderr line matches ${re}${context}`);
    }
    for (const l of lines) if (!TELLS_WHAT_TO_DO.test(l)) throw new Error(`this message does not say what to do: ${l}${context}`);
    expect({ name, code: o.code }).toEqual({ name, code: 1 });
    expect(o.stdout).toBe(''); // no "OK", no workflow id
    expect(o.after).toEqual(o.before); // nothing written next to the config or the data
    if (spec.forbid) expect(o.stdout + o.stderr).not.toContain(spec.forbid);
    if (spec.maxSeconds) expect(o.ms).toBeLessThan(spec.maxSeconds * 1000);
  });

  it('wrong usage is exit 2, not 1', async () => {
    for (const args of [['validate'], ['run'], ['no-such-command']]) {
      const r = await cli(args, work);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
    }
  });

  it('no workflow was started and no artifact was written', async () => {
    const runs = [];
    for await (const w of srv.client.workflow.list()) runs.push(w.workflowId);
    expect(runs).toEqual([]);
    // Neither in the default store (under the case folder or SLEARN_HOME) nor in one a config names.
    const stores = [
      join(slearnHome, 'artifacts'),
      join(work, 'run-unreachable-endpoint', 'out', 'artifacts'),
      ...badCases.map((c) => join(work, c.name, '.slearn', 'artifacts')),
    ];
    for (const root of stores) {
      const store = new Store(new LocalBackend(root));
      expect({ root, runs: await store.listDocs('runs'), objects: await store.listDocs('objects') }).toEqual({ root, runs: [], objects: [] });
    }
    expect(existsSync(join(work, 'run-unreachable-endpoint', 'out'))).toBe(false);
  });

  it('(control) the same server does see a run started from a valid config', async () => {
    // Proves the check above can fail: a live endpoint, a valid config, one workflow.
    const http: Server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.url?.endsWith('/models') ? { object: 'list', data: [{ id: 'test-model', object: 'model' }] } : {}));
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (http.address() as { port: number }).port;
      const cwd = join(work, 'control');
      cpSync(join(ACCEPTED, 'bom'), cwd, { recursive: true });
      writeFileSync(join(cwd, 'slearn.yaml'), `name: control\ndataset: data.jsonl\nmodel:\n  baseUrl: http://127.0.0.1:${port}/v1\n  name: test-model\n`);
      const r = await cli(['run', 'slearn.yaml', '--id', 'bad-input-control'], cwd);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout.trim()).toBe('bad-input-control');
      await waitFor(
        async () => {
          for await (const w of srv.client.workflow.list()) if (w.workflowId === 'bad-input-control') return true;
          return false;
        },
        30_000,
        'the control run to be listed',
      );
      await srv.client.workflow.getHandle('bad-input-control').terminate('control run of the bad-input test');
    } finally {
      await new Promise((r) => http.close(r));
    }
  });
});

describe('a BOM, CRLF line ends and blank lines are accepted as if clean', () => {
  let clean: Awaited<ReturnType<typeof readDataset>>;
  beforeAll(async () => {
    clean = await readDataset(join(CORPUS, 'clean.jsonl'));
  });

  it('the clean version is clean', () => {
    expect(clean.problems).toEqual([]);
    expect(clean.items.length).toBe(3);
  });

  it.each(acceptedCases.map((c) => [c.name, c.spec] as const))('%s', async (name, _spec) => {
    const o = outcomes.get(`accepted-${name}`)!;
    expect({ name, code: o.code, stderr: o.stderr }).toEqual({ name, code: 0, stderr: '' });
    expect(o.stdout).toMatch(new RegExp(`\\b${clean.items.length} items\\b`));
    const ds = await readDataset(join(o.cwd, 'data.jsonl'));
    expect(ds.problems).toEqual([]);
    if (name !== 'security-id-path-traversal') expect(ds.items).toEqual(clean.items);
    expect(o.after).toEqual(o.before);
  });

  it('an id like ../../etc/passwd is data, kept as it is; it never becomes a path', async () => {
    const ds = await readDataset(join(ACCEPTED, 'security-id-path-traversal', 'data.jsonl'));
    expect(ds.items[0].id).toBe('../../etc/passwd');
    // Store keys are checked: such an id could not name an object even if some code tried.
    expect(() => checkKey(`${runPrefix('x')}/work/${ds.items[0].id}`)).toThrow(/not a valid store key/);
    const root = join(work, 'store');
    const store = new Store(new LocalBackend(root));
    await expect(store.writeDoc(`runs/${ds.items[0].id}`, {})).rejects.toThrow(/not a valid store key/);
    // Items travel as data inside blobs, whatever their ids.
    const ref = await store.putJsonl(ds.items);
    expect((await store.jsonlAll<{ id: string }>(ref)).map((i) => i.id)).toEqual(ds.items.map((i) => i.id));
    expect(listFiles(root).every((f) => !f.includes('passwd'))).toBe(true);
  });
});
