import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { Client, Connection, WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { ArtifactStore } from './artifacts/store';
import { configLine, validateAll, type LoadedConfig } from './config';
import { ModelClient } from './model/client';
import { InvalidInputError } from './problems';
import { STATE_DIR } from './paths';
import { temporalAddress } from './temporal/address';
import { dataConverter } from './temporal/dataConverter';
import type { StepRecord } from './schemas/artifacts';
import { TASK_QUEUE, type Progress, type RunInput, type RunResult } from './schemas/run';
import { progressQuery, selfLearning } from './workflows';

export async function connect(address = temporalAddress()): Promise<Client> {
  const converter = dataConverter(); // a malformed SLEARN_PAYLOAD_KEY fails here, before connecting
  const connection = await Connection.connect({ address });
  return new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default', dataConverter: converter });
}

export function defaultArtifactRoot(config: LoadedConfig['config']): string {
  return config.artifacts ?? resolve(STATE_DIR, 'artifacts');
}

export function newRunId(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${name}-${stamp}-${randomBytes(2).toString('hex')}`;
}

/** Refuses a config whose endpoint cannot be reached, before anything is started or written. */
export async function checkEndpoint(loaded: LoadedConfig): Promise<void> {
  const ep = loaded.config.model;
  try {
    await new ModelClient(ep).listModels(AbortSignal.timeout(8000));
  } catch (e) {
    throw new InvalidInputError([
      {
        file: loaded.file,
        line: configLine(loaded.file, ['model', 'baseUrl']),
        field: 'model.baseUrl',
        message: `${(e as Error).message.replace(/[.:]\s*$/, '')}; start the model server or fix the URL`,
      },
    ]);
  }
}

export function runInput(loaded: LoadedConfig, reuseFrom?: string[]): RunInput {
  return { config: loaded.config, configFile: loaded.file, artifactRoot: defaultArtifactRoot(loaded.config), ...(reuseFrom?.length ? { reuseFrom } : {}) };
}

export interface StartOptions {
  runId?: string;
  reuseFrom?: string[];
  checkEndpoint?: boolean;
  taskQueue?: string;
  heartbeatTimeout?: string;
  /** Applied after validation, e.g. the demo's model server URL or `--compare full`. */
  adjust?: (config: LoadedConfig['config']) => void;
}

/** Validates everything, then starts the workflow; nothing is started on invalid input. */
export async function startRun(
  client: Client | (() => Promise<Client>),
  configFile: string,
  opts: StartOptions = {},
): Promise<WorkflowHandle<typeof selfLearning>> {
  const loaded = validateAll(configFile);
  opts.adjust?.(loaded.config);
  if (opts.checkEndpoint !== false) await checkEndpoint(loaded);
  const workflowId = opts.runId ?? newRunId(loaded.config.name);
  // Connecting lazily: bad input is reported even when Temporal is down, and without waiting for it.
  if (typeof client === 'function') client = await client();
  return client.workflow.start(selfLearning, {
    taskQueue: opts.taskQueue ?? TASK_QUEUE,
    workflowId,
    args: [{ ...runInput(loaded, opts.reuseFrom), ...(opts.heartbeatTimeout ? { heartbeatTimeout: opts.heartbeatTimeout } : {}) }],
  });
}

export async function getProgress(client: Client, runId: string): Promise<Progress> {
  return client.workflow.getHandle(runId).query(progressQuery);
}

export interface AuditActivity {
  activity: string;
  input: string;
  scheduled: string;
  durationMs?: number;
  attempts: number;
  outcome: 'completed' | 'failed' | 'timed out' | 'cancelled' | 'running';
  failure?: string;
  lastFailure?: string;
}

export interface AuditRun {
  runId: string;
  status: string;
  events: number;
  continuedAsNew: boolean;
  activities: AuditActivity[];
}

export interface Audit {
  workflowId: string;
  runs: AuditRun[];
  lineage: StepRecord[];
  result?: RunResult;
}

const EventType = temporal.api.enums.v1.EventType;
const ms = (t?: { seconds?: unknown; nanos?: number | null } | null) => (t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0);

/**
 * The first value of a history event's payloads, decoded through the client's codecs: with
 * SLEARN_PAYLOAD_KEY set the raw history holds only ciphertext.
 */
export async function payloadValue<T = unknown>(client: Client, payloads: { payloads?: temporal.api.common.v1.IPayload[] | null } | null | undefined): Promise<T | undefined> {
  let p = payloads?.payloads?.[0];
  if (!p) return undefined;
  const { payloadCodecs, payloadConverter } = client.options.loadedDataConverter;
  for (const codec of [...payloadCodecs].reverse()) [p] = await codec.decode([p]);
  return payloadConverter.fromPayload<T>(p);
}

function summariseInput(v: unknown): string {
  // Inputs are references and small numbers; show which shard or step, not the whole JSON.
  return typeof (v as { shard?: unknown })?.shard === 'number' ? `shard ${(v as { shard: number }).shard}` : '';
}

/** Timeline of every run in a workflow's continue-as-new chain, plus the artifact lineage. */
export async function audit(client: Client, workflowId: string): Promise<Audit> {
  const runs: AuditRun[] = [];
  const execs = [];
  for await (const w of client.workflow.list({ query: `WorkflowId = '${workflowId.replace(/'/g, '')}'` })) execs.push(w);
  execs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  if (!execs.length) throw new InvalidInputError([{ file: workflowId, message: 'no such run: check the id with `slearn schedule list` or the web UI' }]);
  let input: RunInput | undefined;
  let result: RunResult | undefined;
  for (const exec of execs) {
    const handle = client.workflow.getHandle(workflowId, exec.runId);
    const history = await handle.fetchHistory();
    const events = history.events ?? [];
    const byScheduled = new Map<number, AuditActivity & { t0: number }>();
    let continued = false;
    for (const e of events) {
      const id = Number(e.eventId);
      if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED && !input) {
        input = await payloadValue<RunInput>(client, e.workflowExecutionStartedEventAttributes?.input);
      } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
        const a = e.activityTaskScheduledEventAttributes!;
        byScheduled.set(id, {
          activity: a.activityType?.name ?? '?',
          input: summariseInput(await payloadValue(client, a.input).catch(() => undefined)),
          scheduled: new Date(ms(e.eventTime)).toISOString(),
          attempts: 0,
          outcome: 'running',
          t0: ms(e.eventTime),
        });
      } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) {
        const a = e.activityTaskStartedEventAttributes!;
        const act = byScheduled.get(Number(a.scheduledEventId));
        if (act) {
          act.attempts = a.attempt ?? 1;
          if (a.lastFailure?.message) act.lastFailure = a.lastFailure.message;
        }
      } else {
        const done =
          e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes ?? e.activityTaskCanceledEventAttributes;
        if (done) {
          const act = byScheduled.get(Number(done.scheduledEventId));
          if (!act) continue;
          act.durationMs = ms(e.eventTime) - act.t0;
          if (e.activityTaskCompletedEventAttributes) act.outcome = 'completed';
          else if (e.activityTaskFailedEventAttributes) {
            act.outcome = 'failed';
            act.failure = e.activityTaskFailedEventAttributes.failure?.message ?? undefined;
          } else if (e.activityTaskTimedOutEventAttributes) {
            act.outcome = 'timed out';
            act.failure = e.activityTaskTimedOutEventAttributes.failure?.message ?? undefined;
          } else act.outcome = 'cancelled';
        }
        if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW) continued = true;
        if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED) {
          result = (await payloadValue<RunResult>(client, e.workflowExecutionCompletedEventAttributes?.result)) ?? result;
        }
      }
    }
    runs.push({
      runId: exec.runId,
      status: exec.status.name,
      events: events.length,
      continuedAsNew: continued,
      activities: [...byScheduled.values()].map(({ t0: _t0, ...a }) => a),
    });
  }
  const lineage = input ? new ArtifactStore(input.artifactRoot).listSteps(workflowId) : [];
  return { workflowId, runs, lineage, ...(result ? { result } : {}) };
}
