/**
 * How the train activity sets a training up, without training: the launcher command (torchrun for
 * several processes, the contract's argv through it), how many processes `auto` means on a host, the
 * refusal of a training worker that must train on GPUs and cannot (SLEARN_REQUIRE_GPU), the chat
 * template file (found beside the config, allowed by the policy, carried to the training host), the
 * checkpoint uploader that keeps the trainer off the store's path, and the CPU notice.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config';
import { summaryTable } from '../src/cli/output';
import { CheckpointUploader, learnedSettings, trainerArgs } from '../src/pipeline/train';
import { checkConfig } from '../src/pipeline/policy';
import { prepare } from '../src/pipeline/prepare';
import { InvalidInput, NoGpu, PolicyError } from '../src/errors';
import { requireGpu, resolveProcesses } from '../src/pipeline/trainer-process';
import { runWorkers } from '../src/worker';
import { ConfigSchema } from '../src/schemas/config';
import type { RunResult } from '../src/schemas/run';
import { launchArgv, trainArgv } from '../src/schemas/trainer';
import { Lease } from '../src/store/lease';
import { LocalBackend } from '../src/store/local';
import { readManifest } from '../src/store/manifest';
import { Store } from '../src/store/store';
import { stepEnv } from './support/env';
import { tempDir, testPolicy } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

/** A stand-in trainer whose `info` says what a host without a usable GPU says. */
const cpuOnlyTrainer = [
  process.execPath,
  '-e',
  `console.log(JSON.stringify({ device: 'cpu', precision: 'fp32', torch: '2.15.0+cu132', cuda: '13.2', gpus: [], bf16Supported: false,
     cudaUnavailable: 'The NVIDIA driver on your system is too old (found version 12020).', driver: '535.104.05' }))`,
];

describe('setting a training up', () => {
  it('starts several processes under torchrun, the contract argv unchanged behind it', () => {
    const py = ['/venv/bin/python', '-m', 'slearn_trainer'];
    expect(launchArgv(py, 1)).toEqual(py);
    expect(launchArgv(py, 4)).toEqual(['/venv/bin/python', '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '4', '-m', 'slearn_trainer']);
    // SLEARN_TRAINER may name any command: torchrun starts it as it is
    expect(launchArgv(['/opt/trainer'], 2, '/venv/bin/python')).toEqual([
      '/venv/bin/python',
      '-m',
      'torch.distributed.run',
      '--standalone',
      '--nproc-per-node',
      '2',
      '--no-python',
      '/opt/trainer',
    ]);
    const config = ConfigSchema.parse({
      name: 'x',
      dataset: 'd.jsonl',
      model: { baseUrl: 'http://127.0.0.1:9/v1', name: 'm' },
      train: { processes: 2, distributed: 'fsdp', saveMinutes: 15, attention: 'sdpa' },
    });
    const argv = trainArgv(trainerArgs(config, { data: 'd', out: 'o', chatTemplate: 't.jinja' }));
    for (const [flag, value] of [
      ['--distributed', 'fsdp'],
      ['--save-minutes', '15'],
      ['--attention', 'sdpa'],
      ['--gradient-checkpointing', 'auto'],
      ['--chat-template', 't.jinja'],
    ])
      expect(argv[argv.indexOf(flag) + 1]).toBe(value);
    expect(argv).not.toContain('--save-steps'); // the trainer's device default: 20 steps on CPU, by time on CUDA
    // how it runs is not what it learns: a retry with other processes resumes the same training
    expect(learnedSettings(config.train)).not.toHaveProperty('processes');
    expect(learnedSettings(config.train)).toMatchObject({ epochs: 3, learningRate: 2e-4 });
  });

  it('auto is every GPU the host sees: 1 without a driver, on the CPU, or as told', async () => {
    await expect(resolveProcesses(3, 'auto', cpuOnlyTrainer, process.env)).resolves.toMatchObject({ processes: 3 });
    await expect(resolveProcesses('auto', 'cpu', cpuOnlyTrainer, process.env)).resolves.toMatchObject({ processes: 1 });
    const auto = await resolveProcesses('auto', 'auto', cpuOnlyTrainer, process.env);
    expect(auto.processes).toBe(1); // this machine's kernel shows no NVIDIA GPU, or its torch cannot use one
  });

  it('a training worker that must train on GPUs refuses to start without CUDA, and says why', async () => {
    await expect(requireGpu(cpuOnlyTrainer, {})).resolves.toBeUndefined(); // not asked to: trains where it can
    const refused = requireGpu(cpuOnlyTrainer, { SLEARN_REQUIRE_GPU: '1' });
    await expect(refused).rejects.toBeInstanceOf(NoGpu);
    await expect(refused).rejects.toThrow(/driver on your system is too old.*torch 2\.15\.0\+cu132, built for CUDA 13\.2; driver 535\.104\.05/);
    // the worker itself: refused before it connects to anything
    const env = { ...process.env, SLEARN_REQUIRE_GPU: '1' };
    await expect(runWorkers({ address: '127.0.0.1:1', queues: ['slearn-train'], trainer: cpuOnlyTrainer, env })).rejects.toBeInstanceOf(NoGpu);
  });

  it('a chat template file is found beside the config, checked by the policy, and carried to the training host', async () => {
    const dir = tempDir();
    writeJsonl(join(dir, 'train.jsonl'), makeWorld(4));
    writeJsonl(join(dir, 'eval.jsonl'), makeWorld(2, 'e'));
    const file = writeConfig(dir, 'http://127.0.0.1:9/v1', { train: { chatTemplate: 'templates/chat.jinja' } });
    expect(() => loadConfig(file)).toThrow(InvalidInput);
    try {
      loadConfig(file);
    } catch (e) {
      expect((e as InvalidInput).problems[0]).toMatchObject({ field: 'train.chatTemplate', message: expect.stringMatching(/file not found/) });
    }
    mkdirSync(join(dir, 'templates'));
    writeFileSync(join(dir, 'templates', 'chat.jinja'), '{{ messages }}');
    const { config } = loadConfig(file);
    expect(config.train.chatTemplate).toBe(join(dir, 'templates', 'chat.jinja'));
    expect(() => checkConfig(testPolicy({ paths: [join(dir, 'train.jsonl'), join(dir, 'eval.jsonl'), file] }), config, file)).toThrow(PolicyError);
    const prepared = await prepare(stepEnv(), { configFile: file, store: `file://${join(dir, 'store')}`, runId: 'tpl' });
    const store = new Store(new LocalBackend(join(dir, 'store')));
    expect(await store.text(prepared.ctx.chatTemplate!)).toBe('{{ messages }}');
  });

  it('uploads checkpoints off the training path: a snapshot superseded while another uploads is dropped', async () => {
    const dir = tempDir();
    const store = new Store(new LocalBackend(join(dir, 'store')));
    const lease = (await Lease.acquire(store, 'leases/x', { token: 't', what: 'test', ttlMs: 60_000 })) as Lease;
    const ckpt = (step: number) => {
      const d = join(dir, `checkpoint-${step}`);
      mkdirSync(d);
      writeFileSync(join(d, 'adapter_model.safetensors'), Buffer.alloc(1 << 20, step));
      return d;
    };
    const uploaded: number[] = [];
    const up = new CheckpointUploader(store, 'runs/x/train', lease, dir, (s) => uploaded.push(s), { info: () => undefined, warn: () => undefined });
    const losses = [1, 2, 3].map((step) => ({ step, loss: 1 / step }));
    up.add(1, ckpt(1), losses); // starts uploading at once
    await new Promise((r) => setImmediate(r));
    up.add(2, ckpt(2), losses); // waits ...
    up.add(3, ckpt(3), losses); // ... and is superseded by 3 before its turn
    await up.settle(false);
    expect(uploaded).toEqual([1, 3]);
    const docs = await store.listDocs('runs/x/train/checkpoints');
    expect(docs).toHaveLength(2);
    const last = (await store.readDoc<{ step: number; manifest: Parameters<typeof readManifest>[1]; losses: Parameters<Store['jsonlAll']>[0] }>(docs[1]))!;
    expect(last.step).toBe(3);
    expect((await readManifest(store, last.manifest)).files.map((f) => f.name)).toEqual(['adapter_model.safetensors']);
    expect(await store.jsonlAll(last.losses)).toHaveLength(3);
  });

  it('a run that trained on the CPU says so in its summary', () => {
    const run = (device: 'cpu' | 'cuda') =>
      ({
        runId: 'r',
        status: 'completed',
        counts: { items: 1, answered: 1, graded: 1, known: 0, unknown: 1, ungradeable: 0 },
        train: { skipped: false, base: 'b', steps: 3, resumedFromStep: 0, trainSeconds: 1, runtime: { device, precision: device === 'cpu' ? 'fp32' : 'bf16' } },
      }) as unknown as RunResult;
    expect(summaryTable(run('cpu'), undefined, 240)).toMatch(/Trained on the CPU, not a GPU/);
    expect(summaryTable(run('cuda'), undefined, 240)).not.toMatch(/CPU/);
  });
});
