import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';

// Expected on the training queue, which hosts activities only; not worth a warning on every start.
const EXPECTED = [/No workflows registered/, /No Nexus services registered/];

/** Installs the SDK's logger once per process, at `level`, without the noise above. */
export function installLogger(level: LogLevel = (process.env.SLEARN_LOG_LEVEL as LogLevel) ?? 'INFO'): void {
  try {
    Runtime.install({
      logger: new DefaultLogger(level, (entry) => {
        if (EXPECTED.some((re) => re.test(entry.message))) return;
        const meta = entry.meta && Object.keys(entry.meta).length ? ` ${JSON.stringify(entry.meta)}` : '';
        process.stderr.write(`${new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString()} [${entry.level}] ${entry.message}${meta}\n`);
      }),
    });
  } catch {
    /* already installed (tests install their own) */
  }
}
