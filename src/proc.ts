import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * Process identity that survives PID reuse: a PID names a process only together with its start
 * time (clock ticks since boot, /proc/PID/stat field 22) and the boot it belongs to.
 */
export interface ProcessId {
  pid: number;
  start?: string;
}

export interface HostId {
  host: string;
  bootId?: string;
}

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * This machine, as leases record it. SLEARN_HOST names it explicitly (containers that share a
 * kernel share a boot id; the tests run two "hosts" on one machine this way).
 */
export function thisHost(env: NodeJS.ProcessEnv = process.env): HostId {
  if (env.SLEARN_HOST) return { host: env.SLEARN_HOST, bootId: `named:${env.SLEARN_HOST}` };
  const bootId = readOr('/proc/sys/kernel/random/boot_id');
  return { host: hostname(), ...(bootId ? { bootId } : {}) };
}

export function sameHost(a: HostId, b: HostId = thisHost()): boolean {
  return a.host === b.host && a.bootId === b.bootId;
}

export function startTime(pid: number): string | undefined {
  const stat = readOr(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

export function processId(pid: number = process.pid): ProcessId {
  const start = startTime(pid);
  return { pid, ...(start ? { start } : {}) };
}

/** Alive, and the same process that was recorded (not a newer one that got its PID). */
export function isAlive(p: ProcessId | number): boolean {
  const { pid, start } = typeof p === 'number' ? { pid: p, start: undefined } : p;
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (start === undefined) return true;
  const now = startTime(pid);
  return now === undefined || now === start;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM to the process group (the trainer and its children), SIGKILL if it is still there after `graceMs`. */
export async function stopGroup(p: ProcessId | number, graceMs: number): Promise<void> {
  const id = typeof p === 'number' ? { pid: p } : p;
  const send = (sig: NodeJS.Signals) => {
    if (!isAlive(id)) return;
    try {
      process.kill(-id.pid, sig);
    } catch {
      try {
        process.kill(id.pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  send('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(id) && Date.now() < deadline) await sleep(100);
  send('SIGKILL');
  while (isAlive(id) && Date.now() < deadline + 5000) await sleep(50);
}
