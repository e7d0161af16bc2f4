import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { audit, startRun } from '../src/client';
import { main } from '../src/cli';
import { demoPolicy } from '../src/demo';
import { PolicyError } from '../src/errors';
import { checkConfig } from '../src/pipeline/policy';
import { trainerEnv } from '../src/pipeline/trainer-process';
import { ConfigSchema } from '../src/schemas/config';
import { TASK_QUEUE, type RunInput } from '../src/schemas/run';
import { selfLearning } from '../src/workflows';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { filesContaining, jsonContains, rawHistories, walkFiles } from './support/history';
import { ROOT, temporal, tempDir, workerProcess, type WorkerProcess } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const KEY_VAR = 'SLEARN_TEST_KEY';

/** The text of every call `name(...)` in `text`, with balanced parentheses. */
function calls(text: string, name: RegExp): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(new RegExp(`(?<![\\w.$])${name.source}\\s*\\(`, 'g'))) {
    let depth = 0;
    let i = m.index + m[0].length - 1;
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
      for (const name of m[1].split(',').map(
        (s) =>
          s
            .trim()
            .replace(/^type\s+/, '')
            .split(/\s+as\s+/)[0],
      )) {
        if (/^exec(Sync)?$/.test(name)) problems.push(`${file}: imports ${name} from child_process (runs a shell)`);
      }
    }
    if (/child_process['"]\)\s*\.\s*exec(Sync)?\b|\bchild_process\.exec(Sync)?\b|\bcp\.exec(Sync)?\b/.test(text))
      problems.push(`${file}: exec through the module object`);
    for (const args of calls(text, /spawn(Sync)?/)) {
      spawns++;
      // (file, argv, options?): the second argument is an array literal or a variable holding one.
      const second = args.slice(args.indexOf(',') + 1).trimStart();
      if (!args.includes(',') || !/^(\[|[A-Za-z_$][\w$]*\s*[,)]|[A-Za-z_$][\w$]*\s*$)/.test(second))
        problems.push(`${file}: spawn(${args.slice(0, 80)}) has no argument vector`);
      // A shell may only run a fixed script: no interpolation into `sh -c`.
      if (/^\s*['"`](ba)?sh['"`]/.test(args)) {
        const script = second.match(/^\[\s*['"]-c['"]\s*,\s*(['"`])((?:(?!\1).)*)\1\s*\]/);
        if (!script || script[1] === '`' || /[$]/.test(script[2])) problems.push(`${file}: shell with a non-constant script: ${args.slice(0, 80)}`);
      }
    }
  }
  return { problems, spawns };
}

/** An HTTP server on another loopback address (not one the worker's policy allows): records what it is sent. */
async function foreignEndpoint(): Promise<{ baseUrl: string; requests: { url: string; authorization?: string }[]; close(): Promise<void> }> {
  const requests: { url: string; authorization?: string }[] = [];
  const srv: Server = createServer((req: IncomingMessage, res) => {
    requests.push({ url: req.url ?? '', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model', created: 0, owned_by: 'x' }] }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.2', () => r()));
  return {
    baseUrl: `http://127.0.0.2:${(srv.address() as AddressInfo).port}/v1`,
    requests,
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

describe('no secrets in history, logs or artifacts', () => {
  const marker = `sk-slearn-marker-${randomBytes(8).toString('hex')}`;
  // Secrets of the worker itself, which no run may make it send or pass on.
  const awsMarker = `aws${randomBytes(10).toString('hex')}`;
  const codecMarker = `codec${randomBytes(10).toString('hex')}`;
  const otherMarker = `other${randomBytes(10).toString('hex')}`;
  const secrets = [marker, awsMarker, codecMarker, otherMarker];
  const datasetMarker = `ds${randomBytes(6).toString('hex')}`;
  const dir = tempDir('slearn-secrets-');
  const world = makeWorld(12);
  const saved = process.env[KEY_VAR];
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let worker: WorkerProcess;

  const noSecretIn = (what: string, text: string) => {
    for (const s of secrets) expect({ what, leaks: text.includes(s) }).toEqual({ what, leaks: false });
  };

  beforeAll(async () => {
    // The client validates that the variable is set; the worker process reads it inside activities.
    process.env[KEY_VAR] = marker;
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    // The trainer is the fake one behind a recorder of the argument vector and environment it was started with.
    const recorder = join(dir, 'trainer-recorder.js');
    writeFileSync(
      recorder,
      `require('fs').appendFileSync(${JSON.stringify(join(dir, 'trainer-calls.jsonl'))}, JSON.stringify({ argv: process.argv.slice(2), env: process.env }) + '\\n');\n` +
        `require(${JSON.stringify(join(ROOT, 'test', 'support', 'fakeTrainer.js'))});\n`,
    );
    worker = workerProcess(server.address, {
      [KEY_VAR]: marker,
      // The operator allows the test key; AWS_* stays protected even when listed.
      SLEARN_ALLOWED_KEY_ENVS: `${KEY_VAR},AWS_SECRET_ACCESS_KEY`,
      AWS_SECRET_ACCESS_KEY: awsMarker,
      AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
      SLEARN_CODEC_TOKEN: codecMarker,
      SLEARN_OTHER_SECRET: otherMarker,
      SLEARN_PAYLOAD_KEY: '',
      // An operator who passes too much on to the trainer: the worker's secrets still never reach it.
      SLEARN_TRAINER_ENV: 'FAKE_TRAINER_*,AWS_*,TEMPORAL_*,SLEARN_CODEC_TOKEN',
      FAKE_TRAINER_STEP_MS: '5',
      SLEARN_TRAINER: JSON.stringify(['node', recorder]),
    });
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

  it('a run with apiKeyEnv uses the key but never writes it to Temporal, the worker log, the artifact store or the trainer', async () => {
    // The config sits in a folder named with a marker: its path is in the run's input, so in history.
    const data = join(dir, `data-${datasetMarker}`);
    mkdirSync(data);
    writeWorld(data, world, paraphrases(world.slice(0, 6)));
    const configFile = writeConfig(data, fake.baseUrl, {
      artifacts: join(dir, 'artifacts'),
      model: { baseUrl: fake.baseUrl, name: 'fake-model', timeoutSeconds: 5, apiKeyEnv: KEY_VAR },
    });
    expect(readFileSync(configFile, 'utf8')).not.toContain(marker); // the config names the variable only
    const handle = await startRun(server.client, configFile, { runId: 'secrets-run' });
    const result = await handle.result();
    expect(result.counts).toMatchObject({ items: 12, answered: 12, graded: 12, ungradeable: 0 });
    expect(result.evaluation!.tuned).toMatchObject({ correct: 6, total: 6 });

    // The key did reach the model endpoint, from inside the worker's activities; nothing else did.
    expect([...fake.stats.authorizations]).toEqual([`Bearer ${marker}`]);

    // History: every run of the workflow id, raw from the server.
    const histories = rawHistories(server.address, 'secrets-run');
    expect(histories.length).toBeGreaterThan(0);
    for (const { json } of histories) for (const s of secrets) expect(jsonContains(json, s)).toBe(false);
    // The search would find it: the (unencrypted) history does hold the config path and the variable's name.
    expect(histories.some(({ json }) => jsonContains(json, datasetMarker))).toBe(true);
    expect(histories.some(({ json }) => jsonContains(json, KEY_VAR))).toBe(true);

    // The worker's own output (its log lines and any trainer stderr it relays).
    await new Promise((r) => setTimeout(r, 200));
    const log = worker.output.join('');
    expect(log).toContain('slearn worker ready');
    noSecretIn('worker log', log);

    // Every file of the run: artifacts, step records, the trainer's output and log, the report,
    // and the dev server's database. The dataset marker shows the scan reads what is there.
    const files = walkFiles(dir);
    const rel = files.map((f) => relative(dir, f));
    expect(rel.some((f) => f.startsWith('artifacts/'))).toBe(true);
    expect(rel.some((f) => f.startsWith('artifacts/runs/secrets-run/steps/'))).toBe(true);
    expect(filesContaining(dir, datasetMarker).map((f) => relative(dir, f))).toContain('temporal.db');
    for (const s of secrets) expect(filesContaining(dir, s).map((f) => relative(dir, f))).toEqual([]);

    // The trainer was started with an argument vector and an environment that carry no secret.
    const starts = readFileSync(join(dir, 'trainer-calls.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { argv: string[]; env: Record<string, string> });
    expect(starts.length).toBeGreaterThan(0);
    for (const { argv, env } of starts) {
      expect(argv.slice(0, 3)).toEqual(['train', '--base', 'fake-model']);
      expect(argv).toEqual(expect.arrayContaining(['--data', '--out']));
      noSecretIn('trainer argv', argv.join('\n'));
      noSecretIn('trainer environment', JSON.stringify(env));
      expect(Object.keys(env).filter((k) => /^(AWS_|TEMPORAL_|SLEARN_PAYLOAD|SLEARN_CODEC_TOKEN$|SLEARN_TEST_KEY$|SLEARN_OTHER_SECRET$)/.test(k))).toEqual([]);
      // What it needs does reach it: the PATH, its own knobs (SLEARN_TRAINER_ENV), the stdin watchdog.
      expect(env).toMatchObject({ PYTHONUNBUFFERED: '1', SLEARN_TRAINER_WATCH_STDIN: '1', FAKE_TRAINER_STEP_MS: '5' });
      expect(env.PATH).toBeTruthy();
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
      res.end(
        JSON.stringify({
          error: { message: `Incorrect API key provided: ${auth.replace(/^Bearer /, '')}.`, type: 'invalid_request_error', code: 'invalid_api_key' },
        }),
      );
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const baseUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}/v1`;
    try {
      const sub = join(dir, 'echo');
      mkdirSync(sub);
      writeWorld(sub, world, paraphrases(world.slice(0, 6)));
      const configFile = writeConfig(sub, baseUrl, { model: { baseUrl, name: 'fake-model', timeoutSeconds: 5, apiKeyEnv: KEY_VAR } });
      const before = worker.output.length;
      const handle = await startRun(server.client, configFile, { runId: 'secrets-401' });
      const err = await handle.result().then(
        () => undefined,
        (e) => e,
      );
      expect(err).toMatchObject({ name: 'WorkflowFailedError' });
      // A wrong key is a configuration error: not retried, and it says which setting to check.
      expect(err.cause.cause).toMatchObject({ type: 'ModelConfigError', nonRetryable: true });
      expect(err.cause.cause.message).toMatch(/answered 401: .*\[redacted\].*check the key named by apiKeyEnv/);
      const histories = rawHistories(server.address, 'secrets-401');
      const all = histories.map((h) => h.json).join('\n');
      expect(all).toMatch(/answered 401/);
      expect(all).toMatch(/apiKeyEnv/);
      for (const { json } of histories) expect(jsonContains(json, marker)).toBe(false);
      await new Promise((r) => setTimeout(r, 300));
      const log = worker.output.slice(before).join('');
      expect(log).toMatch(/Activity failed.*answerGradeShard/); // the worker did log the failure, without the key
      noSecretIn('worker log', log);
      for (const s of secrets) expect(filesContaining(dir, s).map((f) => relative(dir, f))).toEqual([]);
    } finally {
      await new Promise<void>((r) => echo.close(() => r()));
      echo.closeAllConnections();
    }
  });

  it("a workflow started directly (not through the CLI) that names the worker's secrets or a foreign endpoint fails with a PolicyError and sends nothing", async () => {
    const foreign = await foreignEndpoint();
    try {
      const sub = join(dir, 'direct');
      mkdirSync(sub);
      writeWorld(sub, world, paraphrases(world.slice(0, 6)));
      const cases: { name: string; overrides: Record<string, unknown>; message: RegExp }[] = [
        {
          name: 'protected-key',
          overrides: { model: { baseUrl: fake.baseUrl, name: 'fake-model', apiKeyEnv: 'AWS_SECRET_ACCESS_KEY' } },
          message:
            /model\.apiKeyEnv AWS_SECRET_ACCESS_KEY is not a variable this worker sends as a key: use SLEARN_API_KEY, or list it in SLEARN_ALLOWED_KEY_ENVS on the worker/,
        },
        {
          name: 'payload-key',
          overrides: { model: { baseUrl: fake.baseUrl, name: 'fake-model', apiKeyEnv: 'SLEARN_PAYLOAD_KEY' } },
          message: /model\.apiKeyEnv SLEARN_PAYLOAD_KEY is not a variable this worker sends as a key/,
        },
        {
          name: 'unlisted-key',
          overrides: { model: { baseUrl: fake.baseUrl, name: 'fake-model', apiKeyEnv: 'SLEARN_OTHER_SECRET' } },
          message: /model\.apiKeyEnv SLEARN_OTHER_SECRET is not a variable this worker sends as a key: .*SLEARN_ALLOWED_KEY_ENVS on the worker/,
        },
        {
          name: 'foreign-model',
          overrides: { model: { baseUrl: foreign.baseUrl, name: 'fake-model', apiKeyEnv: KEY_VAR } },
          message: new RegExp(
            `model\\.baseUrl ${foreign.baseUrl.replace(/[./]/g, '\\$&')} is not an endpoint this worker may call: add its URL prefix to SLEARN_ALLOWED_ENDPOINTS on the worker`,
          ),
        },
        {
          name: 'foreign-judge',
          overrides: { grader: { type: 'judge', model: { baseUrl: foreign.baseUrl, name: 'judge', apiKeyEnv: KEY_VAR } } },
          message:
            /grader\.model\.baseUrl http:\/\/127\.0\.0\.2:\d+\/v1 is not an endpoint this worker may call: add its URL prefix to SLEARN_ALLOWED_ENDPOINTS/,
        },
      ];
      const chatBefore = fake.stats.chat;
      for (const c of cases) {
        const configFile = writeConfig(sub, fake.baseUrl, { name: c.name, ...c.overrides });
        // Straight to Temporal, as anyone who may start workflows on the namespace could: no CLI validation.
        const input: RunInput = { configFile, store: `file://${join(sub, 'artifacts')}` };
        const handle = await server.client.workflow.start(selfLearning, { taskQueue: TASK_QUEUE, workflowId: `direct-${c.name}`, args: [input] });
        const err = await handle.result().then(
          () => undefined,
          (e) => e,
        );
        expect(err).toMatchObject({ name: 'WorkflowFailedError' });
        expect(err.cause.cause).toMatchObject({ type: 'PolicyError', nonRetryable: true });
        expect(err.cause.cause.message).toMatch(c.message);
        // Refused at once, in the first step, before any request.
        const acts = (await audit(server.client, `direct-${c.name}`)).runs.flatMap((r) => r.activities);
        expect(acts.map((a) => [a.activity, a.outcome, a.attempts])).toEqual([['prepare', 'failed', 1]]);
      }
      expect(foreign.requests).toEqual([]);
      expect(fake.stats.chat).toBe(chatBefore);
      // The model only ever got the key the operator allowed (from the first test), never one of the worker's own.
      expect([...fake.stats.authorizations].filter((a) => a !== `Bearer ${marker}`)).toEqual([]);
      noSecretIn('worker log', worker.output.join(''));
    } finally {
      await foreign.close();
    }
  });

  it('a run id reused with other data is refused, non-retryable, and never mixes in the old answers', async () => {
    const store = join(dir, 'shared-artifacts');
    const a = join(dir, 'reuse-a');
    const b = join(dir, 'reuse-b');
    mkdirSync(a);
    mkdirSync(b);
    writeWorld(a, world.slice(0, 6), paraphrases(world.slice(0, 3)));
    const other = makeWorld(6, 'other');
    writeWorld(b, other, paraphrases(other.slice(0, 3)));
    const first = await (await startRun(server.client, writeConfig(a, fake.baseUrl, { artifacts: store }), { runId: 'reused-id' })).result();
    expect(first.counts.items).toBe(6);
    const asked = fake.stats.chat;
    const second = await startRun(server.client, writeConfig(b, fake.baseUrl, { artifacts: store }), { runId: 'reused-id' });
    const err = await second.result().then(
      () => undefined,
      (e) => e,
    );
    expect(err).toMatchObject({ name: 'WorkflowFailedError' });
    expect(err.cause.cause).toMatchObject({ type: 'RunIdReused', nonRetryable: true });
    expect(err.cause.cause.message).toMatch(/run id reused-id was used before with other config or data: start the new run under another id/);
    // Nothing was asked for it, and the first run's records are untouched.
    expect(fake.stats.chat).toBe(asked);
    const acts = (await audit(server.client, 'reused-id')).runs.at(-1)!.activities;
    expect(acts.map((x) => [x.activity, x.outcome, x.attempts])).toEqual([['prepare', 'failed', 1]]);
    const lineage = (await audit(server.client, 'reused-id')).lineage;
    expect(lineage.find((s) => s.step === 'prepare')!.result).toMatchObject({ trainItems: 6, dataSha: expect.any(String) });
    expect(lineage.filter((s) => s.step.startsWith('answer-grade')).length).toBeGreaterThan(0);
  });
});

describe('the config never carries a key', () => {
  const dir = tempDir('slearn-keys-');
  const world = makeWorld(4);

  async function validate(file: string): Promise<{ code: number; out: string }> {
    const lines: string[] = [];
    const log = jest.spyOn(console, 'log').mockImplementation((...a) => void lines.push(a.join(' ')));
    const err = jest.spyOn(console, 'error').mockImplementation((...a) => void lines.push(a.join(' ')));
    try {
      const code = await main(['node', 'slearn', 'validate', file]);
      return { code, out: lines.join('\n') };
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
  }

  it.each([
    ['an OpenAI-style live key', `sk_live_${randomBytes(12).toString('hex')}`],
    ['a Hugging Face token', `hf_${randomBytes(12).toString('hex')}Ab`],
    ['a GitHub token', `ghp_${randomBytes(12).toString('hex')}Zz`],
    ['a key with dashes', `sk-proj-${randomBytes(12).toString('hex')}`],
    ['an AWS access key id', 'AKIAIOSFODNN7EXAMPLE'],
  ])('apiKeyEnv set to %s is refused by `slearn validate` without echoing it', async (_what, key) => {
    const sub = tempDir('slearn-keys-');
    writeWorld(sub, world, paraphrases(world.slice(0, 2), 'held'));
    const file = writeConfig(sub, 'http://127.0.0.1:9/v1', { model: { baseUrl: 'http://127.0.0.1:9/v1', name: 'm', apiKeyEnv: key } });
    expect(readFileSync(file, 'utf8')).toContain(key);
    const r = await validate(file);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      /slearn\.yaml:\d+: model\.apiKeyEnv: (looks like a secret key: give the NAME of the environment variable that holds it|must be the NAME of an environment variable, not the key itself)/,
    );
    expect(r.out).not.toContain(key);
    expect(r.out).not.toContain(key.slice(4, 20));
  });

  it('(control) a variable name is accepted', async () => {
    writeWorld(dir, world, paraphrases(world.slice(0, 2), 'held'));
    process.env.SLEARN_KEYS_TEST_VAR = 'x';
    try {
      const r = await validate(
        writeConfig(dir, 'http://127.0.0.1:9/v1', { model: { baseUrl: 'http://127.0.0.1:9/v1', name: 'm', apiKeyEnv: 'SLEARN_KEYS_TEST_VAR' } }),
      );
      expect(r).toMatchObject({ code: 0 });
      expect(r.out).toMatch(/OK \(4 items, 2 evaluation items/);
    } finally {
      delete process.env.SLEARN_KEYS_TEST_VAR;
    }
  });

  it("the trainer's environment never holds the worker's keys, whatever SLEARN_TRAINER_ENV says", () => {
    const env = trainerEnv({
      PATH: '/usr/bin',
      HF_TOKEN: 'hf-ok',
      SLEARN_PAYLOAD_KEY: 'k',
      SLEARN_PAYLOAD_OLD_KEYS: 'k',
      SLEARN_CODEC_TOKEN: 't',
      AWS_SECRET_ACCESS_KEY: 'a',
      TEMPORAL_API_KEY: 't',
      SLEARN_API_KEY: 'model-key',
      OPENAI_API_KEY: 'model-key',
      SLEARN_TRAINER_ENV: 'SLEARN_PAYLOAD*,AWS_*,TEMPORAL_*,SLEARN_CODEC_TOKEN,MY_*',
      MY_SETTING: '1',
    });
    expect(env).toEqual({ PATH: '/usr/bin', HF_TOKEN: 'hf-ok', MY_SETTING: '1', PYTHONUNBUFFERED: '1', SLEARN_TRAINER_WATCH_STDIN: '1' });
  });
});

describe("the demo's worker policy", () => {
  it('allows the directory of the config the demo was given, wherever it is, and nothing beside it', () => {
    const elsewhere = tempDir('slearn-demo-config-');
    const configFile = join(elsewhere, 'demo.yaml');
    const config = ConfigSchema.parse({ name: 'demo', dataset: join(elsewhere, 'train.jsonl'), model: { baseUrl: 'http://127.0.0.1:8000/v1', name: 'm' } });
    const env = { PATH: process.env.PATH };
    expect(() => checkConfig(demoPolicy(configFile, env), config, configFile)).not.toThrow();
    // A worker with the default policy (the working directory and SLEARN_HOME) refuses the same config.
    const { paths } = demoPolicy(join(ROOT, 'examples', 'agriculture', 'slearn.yaml'), env);
    expect(() => checkConfig({ ...demoPolicy(configFile, env), paths }, config, configFile)).toThrow(PolicyError);
    const sibling = { ...config, dataset: join(elsewhere, '..', 'other', 'train.jsonl') };
    expect(() => checkConfig(demoPolicy(configFile, env), sibling, configFile)).toThrow(/outside the directories this worker may read/);
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
    const trainer = sources.find((s) => s.file === join('src', 'pipeline', 'trainer-process.ts'))!;
    expect(calls(trainer.text, /spawn/).join('\n')).toMatch(/^command\[0\],\s*\[\.\.\.command\.slice\(1\),\s*\.\.\.args\]/);
    const demo = sources.find((s) => s.file === join('src', 'demo.ts'))!;
    expect(calls(demo.text, /spawn/).join('\n')).toMatch(/^cmd,\s*\[\.\.\.pre,\s*'serve'/);
    expect(demo.text).toMatch(/const \[cmd, \.\.\.pre\] = trainerCommand\(\)/);
  });

  it('the static check itself flags shell strings, exec and shell: true', () => {
    const bad = (text: string) => shellProblems([{ file: 'x.ts', text }]).problems;
    expect(bad("import { exec } from 'node:child_process';\nexec(`python -m x ${a}`);")).toHaveLength(1);
    expect(bad("import { spawn, execSync as run } from 'child_process';")).toHaveLength(1);
    expect(bad('spawn(cmd, args, { shell: true });')).toHaveLength(1);
    expect(bad('spawn(`python train ${x}`);')).toHaveLength(1);
    expect(bad("spawnSync('sh', ['-c', `python ${x}`]);")).toHaveLength(1);
    expect(bad("spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });")).toEqual([]);
    expect(bad('spawn(command[0], [...command.slice(1), ...args], { detached: true }); /re/.exec(s);')).toEqual([]);
  });
});
