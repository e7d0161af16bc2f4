/**
 * Recurring adaptation, as a user runs it: a schedule whose runs each re-read the config and the
 * data, adapt the model in service (the registry's `current`), and promote only through the gate.
 * Runs on a growing dataset: the first promotes; the next, on the same data, finds nothing new;
 * the one after, trained with a learning rate that wrecks the adapter, is refused by the gate;
 * then, with nothing new again, one ends early. A bad
 * file in between fails only its run (and pauses the schedule, as asked).
 */
import { execFile } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { WorkflowFailedError } from '@temporalio/client';
import { adapterName } from '../src/pipeline/adapters';
import type { RunResult } from '../src/schemas/run';
import type { ModelVersion } from '../src/schemas/registry';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { inProcessWorker, ROOT, temporal, tempDir, waitFor } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeJsonl } from './support/world';

const execFileP = promisify(execFile);

describe('scheduled runs, the model registry and the promotion gate', () => {
  const dir = tempDir();
  const first = makeWorld(24, 'a');
  const added = makeWorld(8, 'b').map((w, i) => ({ ...w, question: `What is the newer code word ${i} of the test domain?`, answer: `newer${i}` }));
  const held = paraphrases(first.slice(0, 12));
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let stop: () => Promise<void>;
  let env: NodeJS.ProcessEnv;

  const slearn = async (...args: string[]) => {
    try {
      const r = await execFileP(process.execPath, [join(ROOT, 'bin', 'slearn.js'), ...args], { env });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, stdout: x.stdout, stderr: x.stderr };
    }
  };
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await slearn(...args, '--json');
    if (r.code !== 0) throw new Error(`slearn ${args.join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };
  /** Triggers the schedule and waits for the run it starts. */
  const triggered = async (seen: Set<string>): Promise<{ id: string; result?: RunResult; error?: string }> => {
    expect((await slearn('schedule', 'trigger', 'nightly')).code).toBe(0);
    let id = '';
    await waitFor(
      async () => {
        const d = await json<{ runs: { runId: string }[] }>('schedule', 'describe', 'nightly');
        id = d.runs.map((r) => r.runId).find((r) => !seen.has(r)) ?? '';
        return id !== '';
      },
      30_000,
      'the triggered run to start',
    );
    seen.add(id);
    try {
      return { id, result: (await server.client.workflow.getHandle(id).result()) as RunResult };
    } catch (e) {
      const cause = e instanceof WorkflowFailedError ? (e.cause as { message?: string; cause?: { message?: string } }) : undefined;
      return { id, error: cause ? String(cause.cause?.message ?? cause.message) : String(e) };
    }
  };

  beforeAll(async () => {
    fake = await startFakeModel({ items: [...first, ...added], knownPercent: 40 });
    server = await temporal(dir);
    stop = await inProcessWorker(server.address);
    env = { ...process.env, TEMPORAL_ADDRESS: server.address, SLEARN_HOME: join(dir, 'home') };
    writeJsonl(join(dir, 'train.jsonl'), first);
    writeJsonl(join(dir, 'eval.jsonl'), held);
    writeConfig(dir, fake.baseUrl, { name: 'nightly-adapt', shardSize: 16, promote: { minGain: 0, maxForgetting: 0.1 } });
  });
  afterAll(async () => {
    await stop?.();
    await server?.stop();
    await fake?.close();
  });

  it('promotes, refuses a worse adapter, ends early when nothing changed, and a bad file fails only its run', async () => {
    const cfg = join(dir, 'slearn.yaml');
    const store = join(dir, 'artifacts');
    const created = await slearn('schedule', 'create', 'nightly', cfg, '--cron', '0 3 * * *', '--tz', 'Europe/Paris', '--pause-on-failure');
    expect(created.stdout).toMatch(/schedule nightly created: cron "0 3 \* \* \*" \(Europe\/Paris\), pauses on failure/);
    const seen = new Set<string>();

    // Run 1: the base model; the adapter learns what it did not know and is promoted.
    const one = await triggered(seen);
    expect(one.result?.promotion).toMatchObject({ promoted: true, version: 1 });
    const v1 = await json<ModelVersion>('models', 'show', 'nightly-adapt@1', '--artifacts', store);
    expect(v1).toMatchObject({ version: 1, runId: one.id, decision: { promoted: true } });

    // Right after the promotion, on the same data and settings: the model in service is the one run 1
    // left, so there is nothing new to learn and nothing is trained.
    const again = await triggered(seen);
    expect(again.result).toMatchObject({ status: 'nothing-new' });
    expect(again.result?.reason).toMatch(new RegExp(`nothing new since run ${one.id}: .*the same current model \\(version 1\\)`));
    expect(again.result?.train).toBeUndefined();

    // The data grows, and someone sets an absurd learning rate; the schedule reads both at its next run.
    appendFileSync(join(dir, 'train.jsonl'), added.map((a) => JSON.stringify(a)).join('\n') + '\n');
    const config = parse(readFileSync(cfg, 'utf8'));
    config.train.learningRate = 0.9;
    writeFileSync(cfg, stringify(config));
    const before = new Map(fake.stats.perModel);

    // Run 2: answers with the current adapter (version 1), trains from it, and is refused.
    const two = await triggered(seen);
    const current = adapterName(v1.adapter);
    expect((fake.stats.perModel.get(current) ?? 0) - (before.get(current) ?? 0)).toBeGreaterThanOrEqual(first.length + added.length);
    expect(two.result?.counts.items).toBe(first.length + added.length);
    expect(two.result?.train?.initAdapter?.sha256).toBe(v1.adapter.sha256);
    expect(two.result?.promotion).toMatchObject({ promoted: false, version: 2 });
    expect(two.result?.promotion?.reason).toMatch(/^refused: tuned .* vs current .*forgot/);
    expect(two.result?.evaluation?.current).toBeDefined();

    // A broken file fails only that run, with FILE:LINE; the schedule goes on. (It was created
    // with --pause-on-failure: Temporal pauses it when it next looks at the failed run.)
    const good = readFileSync(join(dir, 'train.jsonl'), 'utf8');
    appendFileSync(join(dir, 'train.jsonl'), '{"question": "half a line\n');
    const broken = await triggered(seen);
    expect(broken.error).toMatch(/train\.jsonl:33: /);
    expect(await json<{ pauseOnFailure: boolean }>('schedule', 'describe', 'nightly')).toMatchObject({ pauseOnFailure: true });
    writeFileSync(join(dir, 'train.jsonl'), good);

    // Run 3: the same data and the same current model as run 2: nothing new, no training.
    const three = await triggered(seen);
    expect(three.result).toMatchObject({ status: 'nothing-new' });
    expect(three.result?.reason).toMatch(/nothing new since run .*: same data .* and the same current model \(version 1\)/);
    expect(three.result?.train).toBeUndefined();

    // The registry says exactly that.
    const list = await json<{ current: number; versions: ModelVersion[] }>('models', 'list', 'nightly-adapt', '--artifacts', store);
    expect(list.current).toBe(1);
    expect(list.versions.map((v) => [v.version, v.decision.promoted, v.parent ?? null])).toEqual([
      [1, true, null],
      [2, false, 1],
    ]);
    // Both versions were measured on the config's one fixed retention set, though the data grew between them.
    expect(list.versions[0].evaluation.retentionSet).toMatch(/^[0-9a-f]{64}$/);
    expect(list.versions[1].evaluation.retentionSet).toBe(list.versions[0].evaluation.retentionSet);
    const history = await json<{ runs: { runId: string; outcome: string }[] }>('models', 'history', 'nightly-adapt', '--artifacts', store);
    expect(history.runs.map((r) => [r.runId, r.outcome])).toEqual([
      [one.id, 'promoted'],
      [again.id, 'nothing-new'],
      [two.id, 'refused'],
      [three.id, 'nothing-new'],
    ]);
    const described = await json<{ runs: { runId: string; outcome: string }[] }>('schedule', 'describe', 'nightly');
    expect(described.runs.map((r) => r.outcome)).toEqual([
      'promoted',
      'nothing new',
      'refused',
      expect.stringMatching(/invalid dataset|FAILED|train\.jsonl/),
      'nothing new',
    ]);

    // A changed setting is something new: on the same data and current model, the next run trains again.
    config.train.learningRate = 0.01;
    writeFileSync(cfg, stringify(config));
    const four = await triggered(seen);
    expect(four.result?.status).not.toBe('nothing-new');
    expect(four.result?.train?.steps).toBeGreaterThan(0);

    // By hand: roll back to the base, promote version 2 anyway, and the next run adapts it.
    await slearn('models', 'rollback', 'nightly-adapt', '--artifacts', store);
    expect((await json<{ current: number | null }>('models', 'list', 'nightly-adapt', '--artifacts', store)).current).toBeNull();
    const promoted = await slearn('models', 'promote', 'nightly-adapt@2', '--artifacts', store);
    expect(promoted.stdout).toMatch(/current is now version 2/);
    expect((await slearn('schedule', 'delete', 'nightly')).code).toBe(0);
  }, 420_000);
});
