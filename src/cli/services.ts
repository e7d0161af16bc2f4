import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Option, type Command } from 'commander';
import { STATE_DIR } from '../paths';
import { ALL_QUEUES } from '../schemas/run';
import { SERVER_STATE_FILE } from '../temporal/address';
import { compareCommandOption } from './compare';
import { Exit, EXIT } from './exit';

/** Aborted by the first SIGINT or SIGTERM: how the long-running commands learn they should stop. */
export function abortOnSignals(): AbortSignal {
  const ac = new AbortController();
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => ac.abort());
  return ac.signal;
}

const untilSignal = (signal = abortOnSignals()) => new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));

type Service = 'server' | 'worker' | 'codec-server' | 'demo';

/** The commands that start something and keep it up: the dev server, workers, the codec server, the demo. */
export function addServiceCommands(p: Command, which: Service[]): void {
  for (const name of which) SERVICES[name](p);
}

const SERVICES: Record<Service, (p: Command) => void> = {
  server: (p) =>
    p
      .command('server')
      .description('run the embedded Temporal dev server (SQLite file, web UI) until Ctrl-C')
      .option('--db <file>', 'SQLite file that keeps runs across restarts', join(STATE_DIR, 'temporal.db'))
      .option('--port <n>', 'gRPC port', (v) => Number(v), 7233)
      .option('--ui-port <n>', 'web UI port', (v) => Number(v), 8233)
      .action(async (o) => {
        const { startDevServer } = await import('../temporal/devServer');
        const srv = await startDevServer({ db: o.db, port: o.port, uiPort: o.uiPort, logFile: join(STATE_DIR, 'temporal.log') });
        mkdirSync(dirname(SERVER_STATE_FILE), { recursive: true });
        writeFileSync(SERVER_STATE_FILE, JSON.stringify({ address: srv.address, ui: srv.uiUrl, pid: srv.process.pid, db: o.db }));
        console.log(`Temporal dev server on ${srv.address} (state in ${o.db})\nweb UI: ${srv.uiUrl}\nCtrl-C to stop.`);
        await untilSignal();
        await srv.stop();
        rmSync(SERVER_STATE_FILE, { force: true });
      }),

  worker: (p) =>
    p
      .command('worker')
      .description('run workers: the main queue (workflow, data steps), training, and adapter staging for the model server')
      .addOption(new Option('--queue <name...>', 'task queues to serve').choices(ALL_QUEUES).default([...ALL_QUEUES]))
      .option('--scratch <dir>', "this host's scratch directory (training data, checkpoints)")
      .option('--adapter-dir <dir>', "where adapters are staged for this host's model server (its --adapter-root)")
      .action(async (o) => {
        // Loaded only here: the worker package (native core, webpack) is heavy for the other commands.
        const { describeQueues, queuesToServe, runWorkers } = await import('../worker');
        (await import('../temporal/logging')).installLogger();
        await runWorkers(
          {
            queues: o.queue,
            scratch: o.scratch,
            adapterDir: o.adapterDir,
            onReady: () => console.error(`slearn worker ready on ${describeQueues(queuesToServe(o.queue))} (pid ${process.pid})`),
          },
          abortOnSignals(),
        );
      }),

  'codec-server': (p) =>
    p
      .command('codec-server')
      .description('decode encrypted payloads for the Temporal web UI (and `temporal workflow show --codec-endpoint`)')
      .option('--port <n>', 'port on 127.0.0.1', (v) => Number(v), 8888)
      .option('--origin <url...>', "the web UI's origin (CORS)", ['http://localhost:8233', 'http://127.0.0.1:8233'])
      .option('--token-env <name>', 'variable holding the bearer token the UI must send', 'SLEARN_CODEC_TOKEN')
      .action(async (o) => {
        const { EncryptionCodec, KEY_ENV } = await import('../temporal/codec');
        const { codecServer } = await import('../temporal/codecServer');
        // The same key and rotated keys as the workers, read the same way; decoding never refuses plaintext here.
        const codec = EncryptionCodec.fromEnv({ ...process.env, SLEARN_PAYLOAD_ALLOW_PLAINTEXT: '1' });
        if (!codec) throw new Exit(EXIT.failed, `${KEY_ENV} is not set: there is nothing to decode`);
        const token = process.env[o.tokenEnv];
        if (!token || token.length < 16)
          throw new Exit(
            EXIT.failed,
            `set ${o.tokenEnv} to a token of at least 16 characters (e.g. \`openssl rand -hex 24\`), and give the same token to the web UI`,
          );
        const server = codecServer(codec, { origins: o.origin, token });
        await new Promise<void>((r) => server.listen(o.port, '127.0.0.1', () => r()));
        console.log(`codec server on http://127.0.0.1:${o.port} for ${o.origin.join(', ')}; Ctrl-C to stop`);
        await untilSignal();
        server.close();
      }),

  demo: (p) =>
    p
      .command('demo')
      .description('everything, offline, on the bundled data: dev server, model server, worker, a run, a report')
      .addOption(compareCommandOption())
      .option('--config <file>', 'demo config', 'examples/agriculture/slearn.yaml')
      .action(async (o) => {
        const { runDemo } = await import('../demo');
        await runDemo({ configFile: o.config, compare: o.compare ?? [] });
      }),
};
