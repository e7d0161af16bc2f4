import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { atomicWrite } from '../artifacts/store';

/** The trainer contract's stdout, one JSON object per line. */
export const TrainerEventSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('start'), total_steps: z.number(), resumed_from_step: z.number() }),
  z.object({ event: z.literal('progress'), step: z.number(), total_steps: z.number(), loss: z.number().nullable().optional(), epoch: z.number().optional() }),
  z.object({ event: z.literal('checkpoint'), step: z.number(), path: z.string() }),
  z.object({ event: z.literal('done'), adapter: z.string(), steps: z.number(), train_seconds: z.number() }),
  z.object({ event: z.literal('error'), message: z.string(), retryable: z.boolean().optional() }),
]);
export type TrainerEvent = z.infer<typeof TrainerEventSchema>;

export function isAlive(pid: number): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface LockBody {
  workerPid: number;
  trainerPid: number;
  host: string;
  updatedAt: number;
}

/**
 * One trainer per output directory. The lock names the worker and the trainer process group, so a
 * retry after a SIGKILLed worker can tell an orphaned trainer (worker dead: stop it, then take over)
 * from one that another live worker still drives (wait: the attempt fails and Temporal retries).
 */
export class TrainLock {
  constructor(
    readonly file: string,
    readonly staleAfterMs: number,
  ) {}

  read(): LockBody | undefined {
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')) as LockBody;
    } catch {
      return undefined;
    }
  }

  /** Returns a reason when the lock is held by someone alive; takes it otherwise. */
  async acquire(): Promise<string | undefined> {
    for (let tries = 0; tries < 3; tries++) {
      try {
        const fd = openSync(this.file, 'wx');
        writeSync(fd, JSON.stringify(this.body(0)));
        closeSync(fd);
        return undefined;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const held = this.read();
      if (held && held.host !== hostname()) {
        if (Date.now() - held.updatedAt < this.staleAfterMs) return `a trainer on ${held.host} (pid ${held.trainerPid}) still holds ${this.file}`;
      } else if (held && isAlive(held.trainerPid)) {
        if (isAlive(held.workerPid) && held.workerPid !== process.pid) {
          return `trainer pid ${held.trainerPid} of worker pid ${held.workerPid} is still running on this output directory`;
        }
        await stopGroup(held.trainerPid, 10_000);
      }
      rmSync(this.file, { force: true });
    }
    return `could not take ${this.file}`;
  }

  update(trainerPid: number): void {
    atomicWrite(this.file, JSON.stringify(this.body(trainerPid)));
  }

  release(): void {
    const held = this.read();
    if (!held || held.workerPid === process.pid) rmSync(this.file, { force: true });
  }

  private body(trainerPid: number): LockBody {
    return { workerPid: process.pid, trainerPid, host: hostname(), updatedAt: Date.now() };
  }
}

/** SIGTERM to the whole process group, SIGKILL if it is still there after `graceMs`. */
export async function stopGroup(pid: number, graceMs: number): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) signal('SIGKILL');
  while (isAlive(pid) && Date.now() < deadline + 5000) await new Promise((r) => setTimeout(r, 50));
}

export interface TrainerRun {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string[] }>;
}

/** Starts the trainer with an argument vector (never a shell string) in a process group of its own. */
export function startTrainer(command: string[], args: string[], onEvent: (e: TrainerEvent) => void, logFile?: string): TrainerRun {
  const child = spawn(command[0], [...command.slice(1), ...args], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  const stderrTail: string[] = [];
  const logFd = logFile ? openSync(logFile, 'a') : undefined;
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 40) stderrTail.shift();
    if (logFd !== undefined) writeSync(logFd, line + '\n');
  });
  const stdoutDone = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout! })
      .on('line', (line) => {
        if (!line.trim()) return;
        let parsed;
        try {
          parsed = TrainerEventSchema.safeParse(JSON.parse(line));
        } catch {
          parsed = undefined;
        }
        if (parsed?.success) onEvent(parsed.data);
        else stderrTail.push(`(stdout, not a contract event) ${line}`);
      })
      .on('close', resolve);
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string[] }>((resolve) => {
    child.on('error', (err) => {
      stderrTail.push(`cannot start ${command[0]}: ${err.message}`);
      resolve({ code: -1, signal: null, stderrTail });
    });
    child.on('exit', (code, signal) => {
      stdoutDone.then(() => {
        if (logFd !== undefined) closeSync(logFd);
        resolve({ code, signal, stderrTail });
      });
    });
  });
  return { child, done };
}

