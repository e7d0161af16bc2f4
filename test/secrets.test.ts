import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { startRun } from '../src/client';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { filesContaining, jsonContains, rawHistories, walkFiles } from './support/history';
import { ROOT, temporal, tempDir, workerProcess, type WorkerProcess } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

const KEY_VAR = 'SLEARN_TEST_KEY';

/** The text of every call `name(...)` in `text`, with balanced parentheses. */
function calls(text: string, name: RegExp): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(new RegExp(`(?<![\\w.$])${name.source}\\s*\\(`, 'g'))) {
    let depth = 0;
    let i = m.index! + m[0].length - 1;
    const start = i;
    for (; i < text.length; i++) {
      if (text[i] === '(') depth++;
      else if (text[i] === ')' && --depth === 0) break;
    }
    out.push(text.slice(start + 1, i));
  }
  return out;
}

/** Child-process calls in TypeScript sources that could run a shell, or that pass no argument vector. */
function shellProblems(sources: { file: string; text: string }[]): { problems: string[]; spawns: number } {
  const problems: string[] = [];
  let spawns = 0;
  for (const { file, text } of sources) {
    if (/shell\s*:\s*(true|['"`])/.test(text)) problems.push(`${file}: shell option`);
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*['"](node:)?child_process['"]/g)) {
      for (const name of m[1].split(',').map((s) => s.trim().replace(/^type\s+/, '').split(/\s+as\s+/)[0])) {
        if (/^exec(Sync)?$/.test(name)) problems.push(`${file}: imports ${name} from child_process (runs a shell)`);
      }
    }
    if (/child_process['"]\)\s*\.\s*exec(Sync)?\b|\bchild_process\.exec(Sync)?\b|\bcp\.exec(Sync)?\b/.test(text)) problems.push(`${file}: exec through the module object`);
    for (const args of calls(text, /spawn(Sync)?/)) {
      spawns++;
      // (file, argv, options?): the second argument is an array literal or a variable holding one.
      const second = args.slice(args.indexOf(',') + 1).trimStart();
      if (!args.includes(',') || !/^(\[|[A-Za-z_$][\w$]*\s*[,)]|[A-Za-z_$][\w$]*\s*$)/.test(second)) problems.push(`${file}: spawn(${args.slice(0, 80)}) has no argument vector`);
      // A shell may only run a fixed script: no interpolation into `sh -c`.
      if (/^\s*['"`](ba)?sh['"`]/.test(args)) {
        const script = second.match(/^\[\s*['"]-c['"]\s*,\s*(['"`])((?:(?!\1).)*)\1\s*\]/);
        if (!script || script[1] === '`' || /[$]/.test(script[2])) problems.push(`${file}: shell with a non-constant script: ${args.slice(0, 80)}`);
      }
    }
  }
  return { problems, spawns };
}

describe('no secrets in history, logs or artifacts', () => {
  const marker = `sk-slearn-marker-${randomBytes(8).toString('hex')}`;
  const datasetMarker = `ds${randomBytes(6).toString('hex')}`;
  const dir = tempDir('slearn-secrets-');
  const world = makeWorld(12);
  const saved = process.env[KEY_VAR];
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let worker: WorkerProcess;

  beforeAll(async () => {
    // The client validates that the variable is set; the worker process reads it inside activities.
    process.env[KEY_VAR] = marker;
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    // The trainer is the fake one behind a recorder of the argument vector it was started with.
    const recorder = join(dir, 'argv-recorder.js');
    writeFileSync(
      recorder,
      `require('fs').appendFileSync(${JSON.stringify(join(dir, 'trainer-argv.jsonl'))}, JSON.stringify(process.argv.slice(2)) + '\\n');\n` +
        `require(${JSON.stringify(join(ROOT, 'test', 'support', 'fake-trainer.js'))});\n`,
    );
    worker = workerProcess(server.address, { [KEY_VAR]: marker, SLEARN_PAYLOAD_KEY: '', SLEARN_TRAINER: JSON.stringify(['node', recorder]) });
    await Promise.race([worker.ready, worker.exited.then(() => Promise.reject(new Error(`worker exited: ${worker.output.join('')}`)))]);
  });

  afterAll(async () => {
    if (worker && worker.proc.exitCode === null) {
      worker.proc.kill('SIGTERM');
      await worker.exited;
    }
    await server?.stop();
    await fake?.close();
    if (saved === undefined) delete process.env[KEY_VAR];
    else process.env[KEY_VAR] = saved;
  });

  it('a run with apiKeyEnv uses the key but never writes it to Temporal, the worker log or the artifact store', async () => {
    writeJsonl(join(dir, `train-${datasetMarker}.jsonl`), world);
    const configFile = writeConfig(dir, fake.baseUrl, {
      dataset: `train-${datasetMarker}.jsonl`,
      model: { baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 5, apiKeyEnv: KEY_VAR },
    });
    expect(readFileSync(configFile, 'utf8')).not.toContain(marker); // the config names the variable only
    const handle = await startRun(server.client, configFile, { runId: 'secrets-run' });
    const result = (await handle.result()) as RunResult;
    expect(result.counts).toMatchObject({ items: 12, answered: 12, graded: 12, ungradeable: 0 });
    expect(result.evaluation.tuned).toMatchObject({ correct: 12, total: 12 });

    // The key did reach the model endpoint, from inside the worker's activities.
    expect([...fake.stats.authorizations]).toEqual([`Bearer ${marker}`]);

    // History: every run of the workflow id, raw from the server.
    const histories = rawHistories(server.address, 'secrets-run');
    expect(histories.length).toBeGreaterThan(0);
    for (const { json } of histories) expect(jsonContains(json, marker)).toBe(false);
    // The search would find it: the (unencrypted) history does hold the config path and the variable's name.
    expect(histories.some(({ json }) => jsonContains(json, datasetMarker))).toBe(true);
    expect(histories.some(({ json }) => jsonContains(json, KEY_VAR))).toBe(true);

    // The worker's own output (its log lines and any trainer stderr it relays).
    await new Promise((r) => setTimeout(r, 200));
    const log = worker.output.join('');
    expect(log).toContain('slearn worker ready');
    expect(log).not.toContain(marker);

    // Every file of the run: artifacts, step records, the trainer's output and log, the report,
    // and the dev server's database. The dataset marker shows the scan reads what is there.
    const files = walkFiles(dir);
    const rel = files.map((f) => relative(dir, f));
    expect(rel.some((f) => f.startsWith('artifacts/'))).toBe(true);
    expect(rel.some((f) => f.startsWith('runs/'))).toBe(true);
    expect(filesContaining(dir, datasetMarker).map((f) => relative(dir, f))).toContain('temporal.db');
    expect(filesContaining(dir, marker).map((f) => relative(dir, f))).toEqual([]);

    // The trainer was started with an argument vector that carries no secret.
    const argvs = readFileSync(join(dir, 'trainer-argv.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
    expect(argvs.length).toBeGreaterThan(0);
    for (const argv of argvs) {
      expect(argv.slice(0, 3)).toEqual(['train', '--base', 'fake-model']);
      expect(argv).toEqual(expect.arrayContaining(['--data', '--out']));
      expect(argv.join('\n')).not.toContain(marker);
    }
  });

  it('an endpoint that echoes the key in its 401 error does not get it into history, logs or files', async () => {
    // Some OpenAI-compatible servers quote the key they refused; the error must not carry it onwards.
    const echo = createServer((req, res) => {
      const auth = req.headers.authorization ?? '';
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model', created: 0, owned_by: 'x' }] }));
      }
      req.resume();
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${auth.replace(/^Bearer /, '')}.`, type: 'invalid_request_error', code: 'invalid_api_key' } }));
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const baseUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}/v1`;
    try {
      const sub = join(dir, 'echo');
      mkdirSync(sub);
      writeJsonl(join(sub, 'train.jsonl'), world);
      const configFile = writeConfig(sub, baseUrl, { model: { baseUrl, name: 'fake-model', timeoutSeconds: 5, apiKeyEnv: KEY_VAR } });
      const before = worker.output.length;
      const handle = await startRun(server.client, configFile, { runId: 'secrets-401' });
      await expect(handle.result()).rejects.toThrow(/Workflow execution failed/);
      // The failure is still useful: it says what happened and which setting to check.
      const histories = rawHistories(server.address, 'secrets-401');
      const all = histories.map((h) => h.json).join('\n');
      expect(all).toMatch(/answered 401/);
      expect(all).toMatch(/apiKeyEnv/);
      for (const { json } of histories) expect(jsonContains(json, marker)).toBe(false);
      await new Promise((r) => setTimeout(r, 300));
      const log = worker.output.slice(before).join('');
      expect(log).toMatch(/Activity failed.*answerShard/); // the worker did log the failure, without the key
      expect(log).not.toContain(marker);
      expect(filesContaining(dir, marker).map((f) => relative(dir, f))).toEqual([]);
    } finally {
      await new Promise<void>((r) => echo.close(() => r()));
      echo.closeAllConnections();
    }
  });
});

describe('child processes get an argument vector, never a shell string', () => {
  const srcDir = join(ROOT, 'src');
  const sources = walkFiles(srcDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => ({ file: relative(ROOT, f), text: readFileSync(f, 'utf8') }));

  it('src/ never sets shell: true, never calls exec/execSync, and spawns with (file, [args])', () => {
    expect(sources.length).toBeGreaterThan(10);
    const { problems, spawns } = shellProblems(sources);
    expect(problems).toEqual([]);
    expect(spawns).toBeGreaterThanOrEqual(3); // the trainer, the model server (demo) and the dev server
    // The two that run the trainer contract, by name.
    const trainer = sources.find((s) => s.file === join('src', 'activities', 'trainer-process.ts'))!;
    expect(calls(trainer.text, /spawn/).join('\n')).toMatch(/^command\[0\],\s*\[\.\.\.command\.slice\(1\),\s*\.\.\.args\]/);
    const demo = sources.find((s) => s.file === join('src', 'demo.ts'))!;
    expect(calls(demo.text, /spawn/).join('\n')).toMatch(/^trainerCommand\(\)\[0\],\s*\[\.\.\.trainerCommand\(\)\.slice\(1\),\s*'serve'/);
  });

  it('the static check itself flags shell strings, exec and shell: true', () => {
    const bad = (text: string) => shellProblems([{ file: 'x.ts', text }]).problems;
    expect(bad("import { exec } from 'node:child_process';\nexec(`python -m x ${a}`);")).toHaveLength(1);
    expect(bad("import { spawn, execSync as run } from 'child_process';")).toHaveLength(1);
    expect(bad("spawn(cmd, args, { shell: true });")).toHaveLength(1);
    expect(bad("spawn(`python train ${x}`);")).toHaveLength(1);
    expect(bad("spawnSync('sh', ['-c', `python ${x}`]);")).toHaveLength(1);
    expect(bad("spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });")).toEqual([]);
    expect(bad("spawn(command[0], [...command.slice(1), ...args], { detached: true }); /re/.exec(s);")).toEqual([]);
  });
});
