/**
 * The `slearn` command as a user runs it (`node bin/slearn.js`, the compiled dist/), against a real
 * dev server and in-process workers: run, status, audit, list, cancel, resume, schedules, validate,
 * schema; plain output in pipes and with NO_COLOR; a namespace other than `default`; and a
 * connection failure that says what to do.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunListing, RunStatus } from '../src/client';
import { temporalBinary, freePort } from '../src/temporal/devServer';
import type { RunResult } from '../src/schemas/run';
import { startFakeModel, stableHash, type FakeModel } from './support/fakeModel';
import { FAKE_TRAINER, ROOT, temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeJsonl, writeWorld } from './support/world';

// eslint-disable-next-line no-control-regex -- the escape character is what is looked for
const ANSI = /\x1b\[/;

interface Out {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `slearn ARGS` with its output piped (not a terminal). */
function slearn(args: string[], env: NodeJS.ProcessEnv): Promise<Out> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(ROOT, 'bin', 'slearn.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => (stdout += b));
    p.stderr.on('data', (b) => (stderr += b));
    p.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - t0 }));
  });
}

/** `slearn ARGS` on a pseudo-terminal (Python's pty, an argument vector): what a user sees in a terminal. */
function slearnOnTty(args: string[], env: NodeJS.ProcessEnv): { code: number; output: string } {
  const r = spawnSync('python3', ['-c', 'import pty,sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)', process.execPath, join(ROOT, 'bin', 'slearn.js'), ...args], {
    env: { ...process.env, TERM: 'xterm-256color', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status ?? -1, output: r.stdout };
}

describe('the slearn command', () => {
  const dir = tempDir();
  const world = makeWorld(16);
  const known = world.filter((w) => stableHash(w.question) % 100 < 50);
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let env: NodeJS.ProcessEnv;
  let stopWorker: () => Promise<void>;

  async function startWorker(trainer: string[], extraEnv: NodeJS.ProcessEnv = {}) {
    stopWorker = await inProcessWorker(server.address, trainer, { env: extraEnv });
  }

  /** A config of its own (name, data and store) in dir/NAME, so that runs of one test never see another's registry. */
  function project(name: string, overrides: Record<string, unknown> = {}): string {
    const sub = join(dir, name);
    mkdirSync(sub, { recursive: true });
    writeWorld(sub, world, paraphrases(world.slice(0, 8)));
    return writeConfig(sub, fake.baseUrl, { name, shardSize: 4, ...overrides });
  }

  beforeAll(async () => {
    // The CLI under test is dist/: build it from the current sources.
    const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', ROOT], { encoding: 'utf8' });
    if (tsc.status !== 0) throw new Error(`tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    env = { TEMPORAL_ADDRESS: server.address, SLEARN_HOME: join(dir, 'home'), SLEARN_PAYLOAD_KEY: '' };
    await startWorker(FAKE_TRAINER, { FAKE_TRAINER_STEP_MS: '100' });
  }, 240_000);
  afterAll(async () => {
    await stopWorker?.();
    await server?.stop();
    await fake?.close();
  });

  it('validate checks a config, or a dataset file recognised by its content or extension; schema prints a JSON Schema', async () => {
    const cfg = project('validate');
    const ok = await slearn(['validate', cfg], env);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toMatch(/slearn\.yaml: OK \(16 items, 8 evaluation items; artifacts in file:\/\/.*\/validate\/artifacts\)/);

    // A dataset file, by extension (.jsonl) and by content (no extension).
    const byExt = await slearn(['validate', join(dir, 'validate', 'train.jsonl')], env);
    expect(byExt).toMatchObject({ code: 0 });
    expect(byExt.stdout).toMatch(/train\.jsonl: 16 items, .* format: OK/);
    const noExt = join(dir, 'validate', 'qa-data');
    writeJsonl(noExt, world.slice(0, 5));
    const byContent = await slearn(['validate', noExt], env);
    expect(byContent).toMatchObject({ code: 0 });
    expect(byContent.stdout).toMatch(/qa-data: 5 items, .* format: OK/);
    // A bad line in a dataset: FILE:LINE, exit 1.
    writeFileSync(join(dir, 'validate', 'bad.jsonl'), '{"question":"q?","answer":"a"}\n{"question":"no answer"}\n');
    const bad = await slearn(['validate', join(dir, 'validate', 'bad.jsonl')], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/bad\.jsonl:2: answer: /);

    const schema = await slearn(['schema'], env);
    expect(schema.code).toBe(0);
    const s = JSON.parse(schema.stdout);
    expect(s.$schema).toMatch(/json-schema\.org/);
    expect(s.type).toBe('object');
    expect(s.required).toEqual(expect.arrayContaining(['name', 'dataset', 'model']));
    expect(Object.keys(s.properties)).toEqual(
      expect.arrayContaining(['name', 'dataset', 'eval', 'model', 'answer', 'grader', 'filter', 'split', 'train', 'promote', 'shardSize', 'artifacts']),
    );
    expect(Object.keys(s.properties.filter.properties).sort()).toEqual(['replayAnswer', 'replayFraction', 'replayWhen', 'seed', 'trainOn']);
    expect(s.additionalProperties).toBe(false);
  });

  it('run --wait prints the id and a summary and saves the report; status, audit and list read the run', async () => {
    const run = await slearn(['run', project('cli-run'), '--wait', '--id', 'cli-run'], env);
    expect(run.code).toBe(0);
    expect(run.stdout.split('\n')[0]).toBe('cli-run');
    expect(run.stdout).toMatch(new RegExp(`dropped \\(already known\\)\\W+${known.length}\\b`));
    expect(run.stdout).toMatch(new RegExp(`trained on\\W+${16 - known.length}\\b`));
    expect(run.stdout).toMatch(/tuned accuracy\s.*100\.0%/);
    expect(run.stdout).toMatch(/promotion\s.*promoted: tuned 100\.0% vs base/);
    const report = join(dir, 'home', 'runs', 'cli-run', 'report.html');
    expect(run.stdout).toContain(report);
    expect(existsSync(report)).toBe(true);
    expect(readFileSync(join(dir, 'home', 'runs', 'cli-run', 'report.md'), 'utf8')).toContain('promoted');
    // Piped: plain text, no escape codes (progress lines go to stderr, also plain).
    expect(run.stdout + run.stderr).not.toMatch(ANSI);

    const status = await slearn(['status', 'cli-run'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/tuned accuracy/);
    const sj = JSON.parse((await slearn(['status', 'cli-run', '--json'], env)).stdout) as RunStatus;
    expect(sj).toMatchObject({ runId: 'cli-run', status: 'COMPLETED', pending: [] });
    expect(sj.result!.counts).toEqual({ items: 16, answered: 16, graded: 16, known: known.length, unknown: 16 - known.length, ungradeable: 0 });
    expect(sj.result!.promotion).toMatchObject({ promoted: true, version: 1 });

    const auditJson = await slearn(['audit', 'cli-run', '--json'], env);
    expect(auditJson.code).toBe(0);
    const a = JSON.parse(auditJson.stdout);
    const activities = a.runs.flatMap((r: { activities: { activity: string }[] }) => r.activities.map((x) => x.activity));
    expect(new Set(activities)).toEqual(
      new Set(['prepare', 'resolveCurrent', 'answerGradeShard', 'filter', 'train', 'stageAdapter', 'evaluatePass', 'compareModels', 'promote', 'report']),
    );
    expect(a.lineage.map((s: { step: string }) => s.step)).toEqual(
      expect.arrayContaining([
        'prepare',
        'current',
        'answer-grade-000000',
        'filter',
        'train',
        'eval-base',
        'eval-tuned',
        'retention-tuned',
        'compare',
        'promote',
        'report',
      ]),
    );
    expect(a.result.promotion).toMatchObject({ promoted: true });
    const text = await slearn(['audit', 'cli-run'], env);
    expect(text.stdout).toMatch(/workflow cli-run: 1 execution/);
    expect(text.stdout).toMatch(/promotion: promoted \(version 1\)/);
    expect(text.stdout).toMatch(/artifact lineage/);
    expect(text.stdout).not.toMatch(ANSI);

    const list = await slearn(['list'], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/cli-run\W+completed\W.*\Wdone\W+\d+\W+\d+\W+100\.0%\W+yes/);
    expect(list.stdout).not.toMatch(ANSI);
    const listed = (JSON.parse((await slearn(['list', '--json'], env)).stdout) as RunListing[]).find((r) => r.runId === 'cli-run');
    expect(listed).toMatchObject({
      status: 'COMPLETED',
      config: 'cli-run',
      stage: 'done',
      known: known.length,
      unknown: 16 - known.length,
      accuracy: 1,
      promoted: true,
    });
  });

  it('output on a terminal is coloured unless NO_COLOR is set, wherever CI is set or not', () => {
    // CI set on a terminal once turned the tables plain (their colour library decided alone) while the bars stayed fancy.
    const tty = slearnOnTty(['list'], { ...env, CI: 'true' });
    expect(tty.code).toBe(0);
    expect(tty.output).toContain('cli-run');
    expect(tty.output).toMatch(ANSI);
    const noColor = slearnOnTty(['list'], { ...env, NO_COLOR: '1' });
    expect(noColor.code).toBe(0);
    expect(noColor.output).toContain('cli-run');
    expect(noColor.output).not.toMatch(ANSI);
  });

  it('cancel stops a running run: it becomes CANCELLED and its trainer stops', async () => {
    const cfg = project('cli-cancel', { train: { epochs: 100, saveSteps: 50 } });
    const started = await slearn(['run', cfg, '--id', 'cli-cancel'], env);
    expect(started).toMatchObject({ code: 0, stdout: 'cli-cancel\n' });
    await waitFor(
      async () => (JSON.parse((await slearn(['status', 'cli-cancel', '--json'], env)).stdout) as RunStatus).progress?.stage === 'train',
      60_000,
      'training to start',
    );
    const cancel = await slearn(['cancel', 'cli-cancel'], env);
    expect(cancel).toMatchObject({ code: 0 });
    expect(cancel.stdout).toMatch(/run cli-cancel: cancellation requested/);
    await waitFor(
      async () => (JSON.parse((await slearn(['status', 'cli-cancel', '--json'], env)).stdout) as RunStatus).status === 'CANCELLED',
      30_000,
      'the run to be cancelled',
    );
    const status = await slearn(['status', 'cli-cancel'], env);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/run cli-cancel is CANCELLED.*slearn resume cli-cancel/);
    const listed = (JSON.parse((await slearn(['list', '--json'], env)).stdout) as RunListing[]).find((r) => r.runId === 'cli-cancel');
    expect(listed).toMatchObject({ status: 'CANCELLED', stage: 'train' });
    // The trainer was stopped: the training activity ended as cancelled, not left running.
    const acts = JSON.parse((await slearn(['audit', 'cli-cancel', '--json'], env)).stdout).runs[0].activities as { activity: string; outcome: string }[];
    expect(acts.find((x) => x.activity === 'train')).toMatchObject({ outcome: 'cancelled' });
  });

  it("resume starts a new run that reuses the failed run's finished steps", async () => {
    await stopWorker();
    // A trainer that refuses the job for good: the run fails at training.
    await startWorker(['node', '-e', 'console.log(JSON.stringify({event:"error",message:"no GPU left",retryable:false})); process.exit(1)']);
    const cfg = project('cli-resume');
    const failed = await slearn(['run', cfg, '--wait', '--id', 'cli-failing'], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/run cli-failing failed: no GPU left/);
    const status = await slearn(['status', 'cli-failing'], env);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/run cli-failing is FAILED: no GPU left; `slearn audit cli-failing` shows why/);
    await stopWorker();
    await startWorker(FAKE_TRAINER, { FAKE_TRAINER_STEP_MS: '100' });

    const asked = fake.stats.chat;
    const resumed = await slearn(['resume', 'cli-failing', '--wait'], env);
    expect(resumed.code).toBe(0);
    const newId = resumed.stdout.split('\n')[0].trim();
    expect(newId).toMatch(/^cli-resume-/);
    expect(resumed.stdout).toMatch(/tuned accuracy\s.*100\.0%/);
    const audit = JSON.parse((await slearn(['audit', newId, '--json'], env)).stdout);
    // Answering and grading were reused: only the evaluation passes asked the endpoint (base and
    // tuned on the 8 held-out items, and the fixed retention set again: half the known items).
    expect(audit.result.evaluation.retention.total).toBe(Math.floor(known.length / 2));
    expect(fake.stats.chat - asked).toBe(8 + 8 + Math.floor(known.length / 2));
    const reused = audit.lineage.filter((s: { reusedFrom?: string }) => s.reusedFrom === 'cli-failing').map((s: { step: string }) => s.step);
    expect(reused).toEqual(expect.arrayContaining(['prepare', 'current', 'answer-grade-000000', 'answer-grade-000003', 'filter']));
    expect(reused).not.toContain('train');
    expect(audit.runs[0].activities.filter((x: { activity: string }) => x.activity === 'train')).toHaveLength(1);
  });

  it('schedule create, list, describe, pause, unpause, trigger and delete', async () => {
    const cfg = project('cli-nightly');
    const schedules = async () => JSON.parse((await slearn(['schedule', 'list', '--json'], env)).stdout) as { id: string; paused: boolean }[];
    const created = await slearn(['schedule', 'create', 'nightly', cfg, '--every', '24h'], env);
    expect(created).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(/schedule nightly created: every 24h/);
    expect(await schedules()).toEqual([expect.objectContaining({ id: 'nightly', paused: false })]);
    expect((await slearn(['schedule', 'list'], env)).stdout).toMatch(/nightly\s*│?\s*active/);
    expect((await slearn(['schedule', 'pause', 'nightly'], env)).code).toBe(0);
    await waitFor(async () => (await schedules())[0]?.paused === true, 20_000, 'the schedule to show paused');
    expect((await slearn(['schedule', 'describe', 'nightly'], env)).stdout).toMatch(/schedule nightly: paused/);
    expect((await slearn(['schedule', 'unpause', 'nightly'], env)).code).toBe(0);
    await waitFor(async () => (await schedules())[0]?.paused === false, 20_000, 'the schedule to show active');
    expect((await slearn(['schedule', 'trigger', 'nightly'], env)).code).toBe(0);
    // The triggered run is a real selfLearning run started by the schedule; describe shows it and its outcome.
    type Described = { paused: boolean; runs: { runId: string; status: string; outcome: string; reason: string }[] };
    let d: Described | undefined;
    await waitFor(
      async () => {
        d = JSON.parse((await slearn(['schedule', 'describe', 'nightly', '--json'], env)).stdout) as Described;
        return d.runs[0]?.status === 'COMPLETED';
      },
      90_000,
      'the scheduled run to complete',
    );
    expect(d!.paused).toBe(false);
    expect(d!.runs).toHaveLength(1);
    expect(d!.runs[0].runId).toMatch(/^cli-nightly-scheduled/);
    expect(d!.runs[0]).toMatchObject({ outcome: 'promoted' });
    expect(d!.runs[0].reason).toMatch(/^promoted: tuned 100\.0% vs base/);
    const text = await slearn(['schedule', 'describe', 'nightly'], env);
    expect(text.stdout).toMatch(/schedule nightly: active; next run \d{4}-/);
    expect(text.stdout).toMatch(/cli-nightly-scheduled.*completed.*promoted/);
    expect((await slearn(['schedule', 'delete', 'nightly'], env)).code).toBe(0);
    expect(await schedules()).toEqual([]);
    // Neither --cron nor --every: wrong usage.
    const usage = await slearn(['schedule', 'create', 'bad', cfg], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/give exactly one of --cron or --every/);
  });

  it('runs on a namespace other than default: worker and CLI both read TEMPORAL_NAMESPACE', async () => {
    const ns = 'slearn-cli-ns';
    const created = spawnSync(temporalBinary(), ['operator', 'namespace', 'create', '--namespace', ns, '--address', server.address], { encoding: 'utf8' });
    expect(created.status).toBe(0);
    await waitFor(
      async () => {
        try {
          await server.client.connection.workflowService.describeNamespace({ namespace: ns });
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      'the namespace to be registered',
    );
    const stopNs = await inProcessWorker(server.address, FAKE_TRAINER, { env: { TEMPORAL_NAMESPACE: ns, FAKE_TRAINER_STEP_MS: '20' }, namespace: ns });
    try {
      const nsEnv = { ...env, TEMPORAL_NAMESPACE: ns };
      const run = await slearn(['run', project('cli-ns'), '--wait', '--id', 'cli-ns-run'], nsEnv);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/tuned accuracy\s.*100\.0%/);
      // It ran there, and only there.
      const inNs = (await server.client.connection.workflowService.describeWorkflowExecution({ namespace: ns, execution: { workflowId: 'cli-ns-run' } }))
        .workflowExecutionInfo;
      expect(inNs?.status).toBe(2); // COMPLETED
      const listedNs = JSON.parse((await slearn(['list', '--json'], nsEnv)).stdout) as RunListing[];
      expect(listedNs.map((r) => r.runId)).toEqual(['cli-ns-run']);
      const listedDefault = JSON.parse((await slearn(['list', '--json'], env)).stdout) as RunListing[];
      expect(listedDefault.map((r) => r.runId)).not.toContain('cli-ns-run');
      expect(listedDefault.map((r) => r.runId)).toContain('cli-run');
      const status = await slearn(['status', 'cli-ns-run', '--json'], nsEnv);
      expect((JSON.parse(status.stdout) as RunStatus).result).toMatchObject({ status: 'completed' } satisfies Partial<RunResult>);
      expect((await slearn(['status', 'cli-ns-run'], env)).code).toBe(1);
    } finally {
      await stopNs();
    }
  });

  it('a Temporal server that cannot be reached is reported quickly, with its address and what to do', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const r = await slearn(['list'], { ...env, TEMPORAL_ADDRESS: dead });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`cannot reach Temporal at ${dead} (namespace default)`);
    expect(r.stderr).toMatch(/Start the embedded server with `slearn server`.*TEMPORAL_ADDRESS/);
    expect(r.ms).toBeLessThan(15_000);
    // A valid run is refused the same way, after its input was checked, and nothing was started.
    const run = await slearn(['run', project('cli-dead')], { ...env, TEMPORAL_ADDRESS: dead });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot reach Temporal at ${dead}`);
    expect(run.ms).toBeLessThan(15_000);
  });
});
