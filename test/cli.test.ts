import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { FAKE_TRAINER, ROOT, temporal, tempDir, waitFor, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

/** The `slearn` command as a user runs it, against a real dev server and an in-process worker. */
function slearn(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(ROOT, 'bin', 'slearn.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => (stdout += b));
    p.stderr.on('data', (b) => (stderr += b));
    p.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('the slearn command', () => {
  const dir = tempDir();
  const world = makeWorld(16);
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let env: NodeJS.ProcessEnv;
  let stopWorker: () => Promise<void>;

  async function startWorker(trainer: string[]) {
    stopWorker = await inProcessWorker(server.address, trainer);
  }

  beforeAll(async () => {
    require('node:child_process').execFileSync('npx', ['tsc', '-p', ROOT], { stdio: 'inherit' });
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    env = { TEMPORAL_ADDRESS: server.address, SLEARN_HOME: join(dir, 'home') };
    writeJsonl(join(dir, 'train.jsonl'), world);
    writeConfig(dir, fake.baseUrl, { shardSize: 4 });
    await startWorker(FAKE_TRAINER);
  });
  afterAll(async () => {
    await stopWorker();
    await server.stop();
    await fake.close();
  });

  it('run --wait prints the id and a summary; status and audit read the finished run', async () => {
    const run = await slearn(['run', join(dir, 'slearn.yaml'), '--wait', '--id', 'cli-run'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^cli-run$/m);
    expect(run.stdout).toMatch(/known \(dropped\)/);
    expect(run.stdout).toMatch(/tuned accuracy/);

    const status = await slearn(['status', 'cli-run'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('report.html');

    const audit = await slearn(['audit', 'cli-run', '--json'], env);
    expect(audit.code).toBe(0);
    const a = JSON.parse(audit.stdout);
    const activities = a.runs.flatMap((r: { activities: { activity: string }[] }) => r.activities.map((x) => x.activity));
    expect(activities).toEqual(expect.arrayContaining(['prepare', 'answerShard', 'gradeShard', 'filter', 'train', 'evaluate', 'report']));
    expect(a.lineage.map((s: { step: string }) => s.step)).toEqual(expect.arrayContaining(['prepare', 'filter', 'train', 'evaluate', 'report']));
    const text = await slearn(['audit', 'cli-run'], env);
    expect(text.stdout).toMatch(/artifact lineage/);
  });

  it('resume starts a new run that reuses the failed run\'s finished steps', async () => {
    await stopWorker();
    // A trainer that refuses the job for good: the run fails at training.
    await startWorker(['node', '-e', 'console.log(JSON.stringify({event:"error",message:"no GPU left",retryable:false})); process.exit(1)']);
    const failed = await slearn(['run', join(dir, 'slearn.yaml'), '--wait', '--id', 'cli-failing'], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/no GPU left/);
    await stopWorker();
    await startWorker(FAKE_TRAINER);

    const asked = fake.stats.chat;
    const resumed = await slearn(['resume', 'cli-failing', '--wait'], env);
    expect(resumed.code).toBe(0);
    const newId = resumed.stdout.split('\n')[0].trim();
    expect(newId).not.toBe('cli-failing');
    // Answering and grading were reused: only the two evaluation passes asked the endpoint.
    expect(fake.stats.chat - asked).toBe(2 * world.length);
    const audit = JSON.parse((await slearn(['audit', newId, '--json'], env)).stdout);
    const reused = audit.lineage.filter((s: { reusedFrom?: string }) => s.reusedFrom === 'cli-failing').map((s: { step: string }) => s.step);
    expect(reused).toEqual(expect.arrayContaining(['prepare', 'answer-000000', 'grade-000003', 'filter']));
    expect(reused).not.toContain('train');
  });

  it('schedule create, list, pause, unpause, trigger and delete', async () => {
    const cfg = join(dir, 'slearn.yaml');
    expect((await slearn(['schedule', 'create', 'nightly', cfg, '--every', '24h'], env)).code).toBe(0);
    expect((await slearn(['schedule', 'list'], env)).stdout).toMatch(/^nightly\tactive/m);
    expect((await slearn(['schedule', 'pause', 'nightly'], env)).code).toBe(0);
    await waitFor(async () => /^nightly\tpaused/m.test((await slearn(['schedule', 'list'], env)).stdout), 20_000, 'the schedule to show paused');
    expect((await slearn(['schedule', 'unpause', 'nightly'], env)).code).toBe(0);
    expect((await slearn(['schedule', 'trigger', 'nightly'], env)).code).toBe(0);
    // The triggered run is a real selfLearning run started by the schedule.
    await waitFor(async () => {
      for await (const w of server.client.workflow.list({ query: `WorkflowType = 'selfLearning' AND ExecutionStatus = 'Completed'` })) {
        if (w.workflowId.startsWith('test-run-scheduled')) return true;
      }
      return false;
    }, 60_000, 'the scheduled run to complete');
    expect((await slearn(['schedule', 'delete', 'nightly'], env)).code).toBe(0);
    expect((await slearn(['schedule', 'list'], env)).stdout).not.toMatch(/nightly/);
    expect((await slearn(['schedule', 'create', 'bad', cfg], env)).code).toBe(2);
  });
});
