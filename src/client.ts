import { randomBytes } from 'node:crypto';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { configLine, validateAll, type LoadOptions, type Validated } from './config';
import { ModelClient } from './model/client';
import { InvalidInput } from './errors';
import { openStore } from './store/open';
import { listSteps } from './store/steps';
import { temporalTarget, unreachable } from './temporal/address';
import { KEY_ENV } from './temporal/codec';
import { dataConverter } from './temporal/dataConverter';
import type { StepRecord } from './schemas/artifacts';
import type { ActivityProgress } from './schemas/progress';
import { TASK_QUEUE, type Baseline, type Progress, type RunInput, type RunResult } from './schemas/run';
import { progressQuery, selfLearning } from './workflows';

export async function connect(env: NodeJS.ProcessEnv = process.env): Promise<Client> {
  const converter = dataConverter(env); // a malformed SLEARN_PAYLOAD_KEY fails here, before connecting
  const target = temporalTarget(env);
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...(target.connection as object), address: target.address, connectTimeout: 5000 });
  } catch (e) {
    throw unreachable(target, e);
  }
  return new Client({ connection, namespace: target.namespace, dataConverter: converter });
}

/** `NAME-YYYYMMDD-HHMMSS-xxxx`: sortable, and unique enough that two starts never collide. */
export function newRunId(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${name}-${stamp}-${randomBytes(3).toString('hex')}`;
}

/** Refuses a config whose endpoint cannot be reached, before anything is started or written. */
export async function checkEndpoint(v: Validated, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const ep = v.config.model;
  try {
    await new ModelClient(ep, ep.apiKeyEnv ? env[ep.apiKeyEnv] : undefined).listModels(AbortSignal.timeout(8000));
  } catch (e) {
    throw new InvalidInput([
      {
        file: v.file,
        line: configLine(v.file, ['model', 'baseUrl']),
        field: 'model.baseUrl',
        message: `${(e as Error).message.replace(/[.:]\s*$/, '')}; start the model server or fix the URL`,
      },
    ]);
  }
}

/** Refuses an artifact store that cannot be reached or written (a missing bucket, wrong credentials). */
export async function checkStore(v: Validated): Promise<void> {
  try {
    await (await openStore(v.store)).probe();
  } catch (e) {
    throw new InvalidInput([
      { file: v.file, line: configLine(v.file, ['artifacts']), field: 'artifacts', message: `${(e as Error).message}: fix the location or its credentials` },
    ]);
  }
}

export interface StartOptions {
  runId?: string;
  reuseFrom?: string[];
  checkEndpoint?: boolean;
  taskQueue?: string;
  heartbeatTimeout?: string;
  /** Merged over the config file (by the worker too): the demo's endpoint, a test's settings. */
  overrides?: Record<string, unknown>;
  baseline?: Baseline;
  load?: LoadOptions;
}

/** Validates everything (config, data, endpoint, store), then starts the workflow; nothing is started on invalid input. */
export async function startRun(
  client: Client | (() => Promise<Client>),
  configFile: string,
  opts: StartOptions = {},
): Promise<WorkflowHandle<typeof selfLearning>> {
  const v = await validateAll(configFile, { ...opts.load, ...(opts.overrides ? { overrides: opts.overrides } : {}) });
  if (opts.checkEndpoint !== false) await checkEndpoint(v);
  await checkStore(v);
  // Workflow ids are never encrypted (the server indexes them): with payload encryption on, the
  // config name, which may say what the data is about, stays out of the default id.
  const workflowId = opts.runId ?? newRunId(process.env[KEY_ENV] ? 'run' : v.config.name);
  // Connecting lazily: bad input is reported even when Temporal is down, and without waiting for it.
  if (typeof client === 'function') client = await client();
  const input: RunInput = {
    configFile: v.file,
    store: v.store,
    ...(opts.overrides ? { overrides: opts.overrides } : {}),
    ...(opts.reuseFrom?.length ? { reuseFrom: opts.reuseFrom } : {}),
    ...(opts.heartbeatTimeout ? { heartbeatTimeout: opts.heartbeatTimeout } : {}),
    ...(opts.baseline ? { baseline: opts.baseline } : {}),
  };
  return client.workflow.start(selfLearning, {
    taskQueue: opts.taskQueue ?? TASK_QUEUE,
    workflowId,
    args: [input],
    staticSummary: `slearn ${v.config.name}${opts.baseline ? ` (${opts.baseline.kind} baseline)` : ''}: ${v.items} items`,
    memo: { config: v.config.name, stage: 'queued', ...(opts.baseline ? { baseline: opts.baseline.kind } : {}) },
  });
}

/**
 * The first value of a history event's (or a pending activity's) payloads, decoded through the
 * client's codecs: with SLEARN_PAYLOAD_KEY set, Temporal holds only ciphertext.
 */
export async function payloadValue<T = unknown>(
  client: Client,
  payloads: { payloads?: temporal.api.common.v1.IPayload[] | null } | null | undefined,
): Promise<T | undefined> {
  const p = payloads?.payloads?.[0];
  return p ? decodePayload<T>(client, p) : undefined;
}

/** One payload through the client's codecs (last first, as the SDK applies them) and its payload converter. */
async function decodePayload<T>(client: Client, payload: temporal.api.common.v1.IPayload): Promise<T> {
  const { payloadCodecs, payloadConverter } = client.options.loadedDataConverter;
  let p = payload;
  for (const codec of [...payloadCodecs].reverse()) [p] = await codec.decode([p]);
  return payloadConverter.fromPayload<T>(p);
}

/**
 * A failure's message as the code that failed wrote it. With SLEARN_PAYLOAD_KEY set the message is
 * in the failure's encoded attributes (`{message, stack_trace}`, encrypted; Temporal stores "Encoded
 * failure" as the message): decoded with the key. Without the key the stored message is what there is.
 */
export async function failureMessage(client: Client, failure: temporal.api.failure.v1.IFailure | null | undefined): Promise<string | undefined> {
  if (!failure) return undefined;
  if (!failure.encodedAttributes) return failure.message ?? undefined;
  try {
    const attributes = await decodePayload<{ message?: string }>(client, failure.encodedAttributes);
    return attributes?.message ?? failure.message ?? undefined;
  } catch {
    return failure.message ?? undefined; // "Encoded failure": this client does not hold the key it was encrypted with
  }
}

export interface PendingActivity {
  activity: string;
  attempt: number;
  state: string;
  lastFailure?: string;
  progress?: ActivityProgress;
}

export interface RunStatus {
  runId: string;
  status: string;
  progress?: Progress;
  pending: PendingActivity[];
  result?: RunResult;
  failure?: string;
  /** What could not be read, and why (no worker answered the progress query, a heartbeat this client cannot decode). */
  unreadable?: string[];
}

const PendingState = temporal.api.enums.v1.PendingActivityState;

/**
 * Where a run is: the workflow's own progress (a query: no history event) and each running
 * activity's live progress (its last heartbeat details, kept by Temporal on the pending activity).
 */
export async function runStatus(client: Client, runId: string): Promise<RunStatus> {
  const handle = client.workflow.getHandle(runId);
  const desc = await handle.describe();
  const status = desc.status.name;
  const out: RunStatus = { runId, status, pending: [] };
  // A part that cannot be read leaves the rest of the status useful, and says why it is missing.
  const unreadable = (what: string) => (e: Error) => {
    (out.unreadable ??= []).push(`${what}: ${e.message}`);
    return undefined;
  };
  if (status === 'COMPLETED') out.result = (await handle.result()) as RunResult;
  else if (status === 'RUNNING') {
    out.progress = await handle.query(progressQuery).catch(unreadable('progress (no worker answered the query)'));
    for (const a of desc.raw.pendingActivities ?? []) {
      const activity = a.activityType?.name ?? '?';
      const lastFailure = await failureMessage(client, a.lastFailure);
      const progress = a.heartbeatDetails
        ? await payloadValue<ActivityProgress>(client, a.heartbeatDetails).catch(unreadable(`${activity}'s heartbeat`))
        : undefined;
      out.pending.push({
        activity,
        attempt: a.attempt ?? 1,
        state: PendingState[a.state ?? 0]?.replace('PENDING_ACTIVITY_STATE_', '').toLowerCase() ?? '?',
        ...(lastFailure ? { lastFailure } : {}),
        ...(a.heartbeatDetails ? { progress } : {}),
      });
    }
  } else {
    try {
      await handle.result();
    } catch (e) {
      const cause = (e as { cause?: Error }).cause;
      out.failure = (cause as { cause?: Error })?.cause?.message ?? cause?.message ?? (e as Error).message;
    }
  }
  return out;
}

export async function getProgress(client: Client, runId: string): Promise<Progress> {
  return client.workflow.getHandle(runId).query(progressQuery);
}

export interface RunListing {
  runId: string;
  status: string;
  started: string;
  config?: string;
  stage?: string;
  known?: number;
  unknown?: number;
  accuracy?: number;
  promoted?: boolean;
  baseline?: string;
}

/** Runs on the namespace, newest first, with what their memo says (stage, counts, accuracy, promotion). */
export async function listRuns(client: Client, opts: { limit?: number; config?: string } = {}): Promise<RunListing[]> {
  const out: RunListing[] = [];
  for await (const w of client.workflow.list({ query: `WorkflowType = 'selfLearning'` })) {
    const memo = w.memo ?? {};
    if (opts.config && memo.config !== opts.config) continue;
    // A continued-as-new chain shows once: its newest run.
    if (out.some((r) => r.runId === w.workflowId)) continue;
    out.push({
      runId: w.workflowId,
      status: w.status.name,
      started: w.startTime.toISOString(),
      ...(typeof memo.config === 'string' ? { config: memo.config } : {}),
      ...(typeof memo.stage === 'string' ? { stage: memo.stage } : {}),
      ...(typeof memo.known === 'number' ? { known: memo.known } : {}),
      ...(typeof memo.unknown === 'number' ? { unknown: memo.unknown } : {}),
      ...(typeof memo.accuracy === 'number' ? { accuracy: memo.accuracy } : {}),
      ...(typeof memo.promoted === 'boolean' ? { promoted: memo.promoted } : {}),
      ...(typeof memo.baseline === 'string' ? { baseline: memo.baseline } : {}),
    });
    if (out.length >= (opts.limit ?? 50)) break;
  }
  return out;
}

/** The input a run was started with (its first execution's), to resume or audit it. */
export async function runInputOf(client: Client, runId: string): Promise<RunInput | undefined> {
  const execs = [];
  for await (const w of client.workflow.list({ query: `WorkflowId = '${runId.replace(/'/g, '')}'` })) execs.push(w);
  execs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  if (!execs.length) return undefined;
  const history = await client.workflow.getHandle(runId, execs[0].runId).fetchHistory();
  return payloadValue<RunInput>(client, history.events?.[0]?.workflowExecutionStartedEventAttributes?.input);
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
  /** Temporal's id of this execution in the continue-as-new chain (not the workflow id). */
  executionRunId: string;
  status: string;
  events: number;
  continuedAsNew: boolean;
  /** Why this execution failed, when it did. */
  failure?: string;
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

function summariseInput(v: unknown): string {
  // Inputs are references and small numbers; show which shard, set or model, not the whole JSON.
  const x = v as { shard?: unknown; set?: unknown; model?: { label?: unknown } } | undefined;
  if (typeof x?.shard === 'number') return `shard ${x.shard}`;
  if (typeof x?.set === 'string') return `${x.set} · ${typeof x.model?.label === 'string' ? x.model.label : ''}`;
  return '';
}

/** Timeline of every execution in a workflow's continue-as-new chain, plus the artifact lineage from the store. */
export async function audit(client: Client, workflowId: string): Promise<Audit> {
  const runs: AuditRun[] = [];
  const execs = [];
  for await (const w of client.workflow.list({ query: `WorkflowId = '${workflowId.replace(/'/g, '')}'` })) execs.push(w);
  execs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  if (!execs.length) throw new InvalidInput([{ file: workflowId, message: 'no such run: check the id with `slearn list` or the web UI' }]);
  let input: RunInput | undefined;
  let result: RunResult | undefined;
  for (const exec of execs) {
    const history = await client.workflow.getHandle(workflowId, exec.runId).fetchHistory();
    const events = history.events ?? [];
    const byScheduled = new Map<number, AuditActivity & { t0: number }>();
    let continued = false;
    let runFailure: string | undefined;
    for (const e of events) {
      const id = Number(e.eventId);
      if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED && !input) {
        input = await payloadValue<RunInput>(client, e.workflowExecutionStartedEventAttributes?.input);
      } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
        const a = e.activityTaskScheduledEventAttributes!;
        byScheduled.set(id, {
          activity: a.activityType?.name ?? '?',
          input: await payloadValue(client, a.input).then(summariseInput, (e: Error) => `(input not readable: ${e.message})`),
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
          const last = await failureMessage(client, a.lastFailure);
          if (last) act.lastFailure = last;
        }
      } else {
        const done =
          e.activityTaskCompletedEventAttributes ??
          e.activityTaskFailedEventAttributes ??
          e.activityTaskTimedOutEventAttributes ??
          e.activityTaskCanceledEventAttributes;
        if (done) {
          const act = byScheduled.get(Number(done.scheduledEventId));
          if (!act) continue;
          act.durationMs = ms(e.eventTime) - act.t0;
          if (e.activityTaskCompletedEventAttributes) act.outcome = 'completed';
          else if (e.activityTaskFailedEventAttributes) {
            act.outcome = 'failed';
            act.failure = await failureMessage(client, e.activityTaskFailedEventAttributes.failure);
          } else if (e.activityTaskTimedOutEventAttributes) {
            act.outcome = 'timed out';
            act.failure = await failureMessage(client, e.activityTaskTimedOutEventAttributes.failure);
          } else act.outcome = 'cancelled';
        }
        if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW) continued = true;
        if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED) {
          // The run's own failure: its cause chain ends at the step that failed and why.
          let f = e.workflowExecutionFailedEventAttributes?.failure;
          while (f?.cause) f = f.cause;
          runFailure = await failureMessage(client, f);
        }
        if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED) {
          result = (await payloadValue<RunResult>(client, e.workflowExecutionCompletedEventAttributes?.result)) ?? result;
        }
      }
    }
    runs.push({
      executionRunId: exec.runId,
      status: exec.status.name,
      events: events.length,
      continuedAsNew: continued,
      ...(runFailure ? { failure: runFailure } : {}),
      activities: [...byScheduled.values()].map(({ t0: _t0, ...a }) => a),
    });
  }
  const lineage = input ? await listSteps(await openStore(input.store), workflowId) : [];
  return { workflowId, runs, lineage, ...(result ? { result } : {}) };
}
