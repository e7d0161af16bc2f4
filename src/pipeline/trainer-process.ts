import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { RuntimeInfoSchema, TrainerEventSchema, type RuntimeInfo, type TrainerEvent } from '../schemas/trainer';
import { NoGpu } from '../errors';
import { PROTECTED_ENV as NEVER } from './policy';

/** Variables a trainer may see: what Python, torch and the Hugging Face stack read, nothing of the worker's secrets. */
const TRAINER_ENV = [
  /^(PATH|HOME|USER|LOGNAME|SHELL|LANG|TZ|TMPDIR|TEMP|TMP)$/,
  /^LC_/,
  /^PYTHON/,
  /^(HF|HUGGINGFACE|TRANSFORMERS|TOKENIZERS|DATASETS)_/,
  /^(TORCH|CUDA|NVIDIA|NCCL|CUBLAS|CUDNN|PYTORCH)_?/,
  /^(OMP|MKL|OPENBLAS)_/,
  /^MALLOC_/,
  /^(WANDB|MLFLOW|TENSORBOARD)_/,
  /^SLEARN_(MODEL_CACHE|THREADS|NO_MALLOC_TUNING)$/,
];

/**
 * The trainer's environment: an allowlist, plus the names (or `PREFIX*` patterns) listed in the
 * worker's SLEARN_TRAINER_ENV. The worker's payload key, cloud credentials and Temporal settings
 * never reach it.
 */
export function trainerEnv(env: NodeJS.ProcessEnv, watchStdin = true): NodeJS.ProcessEnv {
  const extra = (env.SLEARN_TRAINER_ENV ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((p) => (p.endsWith('*') ? new RegExp(`^${p.slice(0, -1).replace(/[^A-Za-z0-9_]/g, '')}`) : new RegExp(`^${p.replace(/[^A-Za-z0-9_]/g, '')}$`)));
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || NEVER.test(k)) continue;
    if ([...TRAINER_ENV, ...extra].some((re) => re.test(k))) out[k] = v;
  }
  return { ...out, PYTHONUNBUFFERED: '1', ...(watchStdin ? { SLEARN_TRAINER_WATCH_STDIN: '1' } : {}) };
}

export interface TrainerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderrTail: string[];
}

export interface TrainerRun {
  child: ChildProcess;
  done: Promise<TrainerExit>;
}

/**
 * Starts the trainer from an argument vector (never a shell string) in a process group of its own.
 * Its stdin is a pipe the trainer watches: when this worker dies, the pipe closes and the trainer
 * stops by itself instead of training on as an orphan.
 */
export function startTrainer(
  command: string[],
  args: string[],
  onEvent: (e: TrainerEvent) => void,
  opts: { logFile?: string; eventLog?: string; env: NodeJS.ProcessEnv },
): TrainerRun {
  const child = spawn(command[0], [...command.slice(1), ...args], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
  child.stdin.on('error', () => undefined); // the trainer exiting first closes it
  const stderrTail: string[] = [];
  const log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
  // Every event as the trainer printed it, for a look after the fact (did a rank speak twice?).
  const events = opts.eventLog ? createWriteStream(opts.eventLog, { flags: 'a' }) : undefined;
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 40) stderrTail.shift();
    log?.write(line + '\n');
  });
  const stdoutDone = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout })
      .on('line', (line) => {
        if (!line.trim()) return;
        let parsed;
        try {
          parsed = TrainerEventSchema.safeParse(JSON.parse(line));
        } catch {
          parsed = undefined;
        }
        if (parsed?.success) {
          events?.write(line + '\n');
          onEvent(parsed.data);
        } else stderrTail.push(`(stdout, not a contract event) ${line.slice(0, 300)}`);
      })
      .on('close', resolve);
  });
  const done = new Promise<TrainerExit>((resolve) => {
    child.on('error', (err) => {
      stderrTail.push(`cannot start ${command[0]}: ${err.message}`);
      resolve({ code: -1, signal: null, stderrTail });
    });
    child.on('exit', (code, signal) => {
      void stdoutDone.then(() => {
        log?.end();
        events?.end();
        resolve({ code, signal, stderrTail });
      });
    });
  });
  return { child, done };
}

const execFileP = promisify(execFile);

/** `TRAINER info`: what the trainer sees on this host (device, GPUs, why not CUDA), or why it could not say. */
export async function trainerInfo(trainer: string[], env: NodeJS.ProcessEnv): Promise<RuntimeInfo> {
  const { stdout } = await execFileP(trainer[0], [...trainer.slice(1), 'info'], { env: trainerEnv(env, false), timeout: 120_000 });
  return RuntimeInfoSchema.parse(JSON.parse(stdout.trim().split('\n').pop() ?? ''));
}

/** GPUs the NVIDIA driver of this host shows (none without a driver): a look that needs no Python. */
export function driverGpuCount(): number {
  try {
    return readdirSync('/proc/driver/nvidia/gpus').length;
  } catch {
    return 0;
  }
}

const infoCache = new Map<string, Promise<RuntimeInfo>>();

/**
 * How many training processes `train.processes` means on this host: a number is itself; `auto` is
 * every GPU torch sees (asked once per worker and trainer command), as many as share the effective
 * batch equally (a batch of 4 on 8 GPUs trains on 4 of them), and 1 on a host whose driver shows no
 * GPU or where training is set to the CPU, without starting Python at all.
 */
export async function resolveProcesses(
  processes: number | 'auto',
  device: 'auto' | 'cuda' | 'cpu',
  trainer: string[],
  env: NodeJS.ProcessEnv,
  effectiveBatch = 1,
): Promise<{ processes: number; why: string }> {
  if (processes !== 'auto') return { processes, why: 'train.processes' };
  if (device === 'cpu') return { processes: 1, why: 'train.device is cpu' };
  if (!driverGpuCount()) return { processes: 1, why: 'no GPU on this host' };
  const key = JSON.stringify(trainer);
  let info = infoCache.get(key);
  if (!info) infoCache.set(key, (info = trainerInfo(trainer, env)));
  let gpus: number;
  try {
    const i = await info;
    if (i.device !== 'cuda') return { processes: 1, why: i.cudaUnavailable ?? 'no CUDA' };
    gpus = Math.max(1, i.gpus.length);
  } catch (e) {
    infoCache.delete(key);
    return { processes: 1, why: `the trainer's info failed: ${(e as Error).message.split('\n')[0]}` };
  }
  let n = gpus;
  while (effectiveBatch % n) n--;
  return { processes: n, why: n === gpus ? `${gpus} GPUs` : `${gpus} GPUs, ${n} share the effective batch of ${effectiveBatch} equally` };
}

/**
 * With SLEARN_REQUIRE_GPU=1, refuses to start a training worker whose trainer would train on the CPU,
 * saying why as torch says it (no driver, or a driver older than the CUDA torch was built for, with
 * both versions): an 8B base trained in float32 on CPU would take days, silently.
 */
export async function requireGpu(trainer: string[], env: NodeJS.ProcessEnv): Promise<RuntimeInfo | undefined> {
  if (env.SLEARN_REQUIRE_GPU !== '1') return undefined;
  let info: RuntimeInfo;
  try {
    info = await trainerInfo(trainer, env);
  } catch (e) {
    throw new NoGpu(`SLEARN_REQUIRE_GPU=1: cannot ask the trainer (${trainer.join(' ')} info) what it sees: ${(e as Error).message}`);
  }
  if (info.device !== 'cuda' || !info.gpus.length) {
    const why = info.cudaUnavailable ?? 'torch sees no CUDA GPU';
    throw new NoGpu(
      `SLEARN_REQUIRE_GPU=1 but the trainer would train on the CPU: ${why} (torch ${info.torch}, built for CUDA ${info.cuda ?? 'none'}; ` +
        `driver ${info.driver ?? 'none loaded'}). Fix the driver or the torch build, or unset SLEARN_REQUIRE_GPU to train on the CPU.`,
    );
  }
  return info;
}
