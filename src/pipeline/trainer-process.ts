import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { TrainerEventSchema, type TrainerEvent } from '../schemas/trainer';
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
  opts: { logFile?: string; env: NodeJS.ProcessEnv },
): TrainerRun {
  const child = spawn(command[0], [...command.slice(1), ...args], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
  child.stdin.on('error', () => undefined); // the trainer exiting first closes it
  const stderrTail: string[] = [];
  const log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
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
        if (parsed?.success) onEvent(parsed.data);
        else stderrTail.push(`(stdout, not a contract event) ${line.slice(0, 300)}`);
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
        resolve({ code, signal, stderrTail });
      });
    });
  });
  return { child, done };
}
