import { spawn, type ChildProcess } from 'node:child_process';
import { trainerCommand } from '../../src/paths';

/**
 * The real embedded model server (SmolLM2-135M on CPU, or another `base` the trainer contract
 * loads, served as `servedName`) on a port it picks itself, loading adapters from below `adapterRoot`.
 */
export async function startRealModelServer(
  adapterRoot: string,
  timeoutMs = 300_000,
  model: { base: string; servedName: string } = { base: 'smollm2-135m-instruct', servedName: 'smollm2-135m-instruct' },
): Promise<{ baseUrl: string; proc: ChildProcess; stop: () => Promise<void> }> {
  const [cmd, ...pre] = trainerCommand();
  const args = ['serve', '--base', model.base, '--served-name', model.servedName, '--host', '127.0.0.1', '--port', '0', '--adapter-root', adapterRoot];
  const proc = spawn(cmd, [...pre, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exited;
  };
  const log: string[] = [];
  const baseUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`model server not ready after ${timeoutMs} ms:\n${log.join('')}`)), timeoutMs);
    proc.stderr.on('data', (b: Buffer) => {
      log.push(b.toString());
      const m = log.join('').match(/ready on (http:\/\/127\.0\.0\.1:\d+\/v1)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    void exited.then(() => reject(new Error(`model server exited:\n${log.join('')}`)));
  });
  return { baseUrl, proc, stop };
}
