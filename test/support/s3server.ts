import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CreateBucketCommand, ListBucketsCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { freePort } from '../../src/temporal/devServer';

/**
 * A real S3-compatible server for tests: the Versity S3 Gateway (versitygw, Apache-2.0) with its
 * POSIX backend, on 127.0.0.1. `scripts/install-s3-server.sh` builds it into .tools/bin.
 */
const ROOT = resolve(__dirname, '..', '..');
export const S3_SERVER_BIN = process.env.SLEARN_S3_SERVER_BIN ?? join(ROOT, '.tools', 'bin', 'versitygw');

export interface S3Server {
  /** http://127.0.0.1:PORT — use with forcePathStyle: true. */
  endpoint: string;
  /** A bucket created at start (it survives restarts). */
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** State directory: objects under dir/data, the server's output in dir/versitygw.log. */
  dir: string;
  port: number;
  /** SIGTERM, then SIGKILL after a few seconds; resolves once the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Stop (if running) and start again on the same directory and port; resolves once it answers S3 calls. */
  restart(): Promise<void>;
  /** SIGKILL at once, like a crashed host; `restart()` brings it back. */
  kill(): Promise<void>;
  /** The server's output so far (for failure messages). */
  log(): string;
}

export interface S3ServerOptions {
  /** State directory to use (and reuse across servers); a fresh temp dir by default. */
  dir?: string;
  /** Port on 127.0.0.1; a free one by default. */
  port?: number;
  /** Bucket to create; 'slearn-test' by default. */
  bucket?: string;
  /** How long to wait for the server to answer ListBuckets (ms). */
  readyTimeoutMs?: number;
}

// AWS SDK v3 prints a NodeVersionSupportWarning once per process on Node < 22 (tests run on 20).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const ACCESS_KEY_ID = 'slearn-test-access';
const SECRET_ACCESS_KEY = 'slearn-test-secret-key';
const REGION = 'us-east-1';
const STOP_GRACE_MS = 3_000;

// Servers still running when the test process exits are killed with it.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(proc: ChildProcess): void {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const p of live) p.kill('SIGKILL');
    });
  }
}

/** Standard AWS SDK environment for a process (a worker, the CLI) that should use this server. */
export function s3Env(s: Pick<S3Server, 'endpoint' | 'accessKeyId' | 'secretAccessKey' | 'region'>): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: s.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s.secretAccessKey,
    AWS_REGION: s.region,
    AWS_ENDPOINT_URL_S3: s.endpoint,
    // AWS SDK v3 warns once per process on Node < 22; tests run on Node 20.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
}

/** An S3 client for this server (path-style addressing, static credentials). */
export function s3Client(s: Pick<S3Server, 'endpoint' | 'accessKeyId' | 'secretAccessKey' | 'region'>, extra: S3ClientConfig = {}): S3Client {
  return new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    ...extra,
  });
}

function tail(file: string, n = 4000): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > n ? '…' + text.slice(-n) : text;
  } catch {
    return '';
  }
}

/** Starts versitygw on 127.0.0.1, waits until it answers a real S3 call, and creates a bucket. */
export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  if (!existsSync(S3_SERVER_BIN)) {
    throw new Error(
      `S3 test server not installed: ${S3_SERVER_BIN} is missing. Run \`bash scripts/install-s3-server.sh\` (builds versitygw with Go into .tools/bin, a few minutes the first time).`,
    );
  }
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'slearn-s3-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'versitygw.log');
  mkdirSync(dataDir, { recursive: true });
  const bucket = opts.bucket ?? 'slearn-test';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const fixedPort = opts.port !== undefined;
  let port = opts.port ?? (await freePort());
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const conn = () => ({ endpoint: `http://127.0.0.1:${port}`, accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY, region: REGION });

  const spawnOnce = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    const args = ['--access', ACCESS_KEY_ID, '--secret', SECRET_ACCESS_KEY, '--region', REGION, '--port', `127.0.0.1:${port}`, '--quiet', 'posix', dataDir];
    const p = spawn(S3_SERVER_BIN, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    track(p);
    proc = p;
    let gone = false;
    let spawnErr = '';
    exited = new Promise<void>((r) => {
      p.once('exit', () => ((gone = true), r()));
      // A binary that cannot be executed emits 'error' and possibly no 'exit'.
      p.once('error', (e) => ((spawnErr = `${String(e)}\n`), (gone = true), r()));
    });
    // One attempt per call, each cut off after 2 s (something else may hold the port and never
    // answer), and raced with the process's exit, so the poll loop controls the pace.
    const probe = s3Client(conn(), { maxAttempts: 1 });
    const deadline = Date.now() + readyTimeoutMs;
    let lastErr: unknown;
    try {
      for (;;) {
        if (gone) throw new Error(`versitygw exited during start (port ${port}):\n${spawnErr}${tail(logFile)}`);
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), 2_000);
        try {
          const ok = await Promise.race([probe.send(new ListBucketsCommand({}), { abortSignal: abort.signal }).then(() => true), exited.then(() => false)]);
          if (ok) return;
        } catch (e) {
          lastErr = e;
        } finally {
          clearTimeout(timer);
          abort.abort();
        }
        if (Date.now() > deadline) {
          p.kill('SIGKILL');
          throw new Error(
            `versitygw did not answer ListBuckets on 127.0.0.1:${port} within ${readyTimeoutMs} ms (last error: ${String(lastErr)}):\n${tail(logFile)}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      probe.destroy();
    }
  };

  const start = async (): Promise<void> => {
    // A free port can be taken between freePort() and the bind: pick another, unless the caller fixed it.
    for (let attempt = 1; ; attempt++) {
      try {
        return await spawnOnce();
      } catch (e) {
        if (fixedPort || attempt >= 3 || !/address already in use/i.test(String(e))) throw e;
        port = await freePort();
      }
    }
  };

  const stop = async (): Promise<void> => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(t);
  };

  const kill = async (): Promise<void> => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGKILL');
    await exited;
  };

  await start();
  const admin = s3Client(conn(), { maxAttempts: 3 });
  try {
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (e) {
    // Reusing a directory from an earlier server: the bucket is already there.
    if ((e as { name?: string }).name !== 'BucketAlreadyOwnedByYou') {
      await stop();
      throw e;
    }
  } finally {
    admin.destroy();
  }

  const server: S3Server = {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    accessKeyId: ACCESS_KEY_ID,
    secretAccessKey: SECRET_ACCESS_KEY,
    region: REGION,
    dir,
    port,
    stop,
    kill,
    restart: async () => {
      await stop();
      await spawnOnce(); // same port: the endpoint that clients hold stays valid
    },
    log: () => tail(logFile, 1 << 20),
  };
  return server;
}
