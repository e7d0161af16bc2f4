import { createHash } from 'node:crypto';
import { RunIdReused } from '../errors';
import { StepRecordSchema, type ArtifactRef, type StepRecord } from '../schemas/artifacts';
import type { Store } from './store';

/**
 * The folder name of a run. Workflow ids are arbitrary strings (schedules append a timestamp with
 * colons); anything that is not a plain name gets a readable, collision-free form instead.
 */
export function runKey(runId: string): string {
  if (/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(runId)) return runId;
  const readable = runId
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 100);
  return `${readable || 'run'}-${createHash('sha256').update(runId).digest('hex').slice(0, 8)}`;
}

export function fingerprint(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

export const runPrefix = (runId: string) => `runs/${runKey(runId)}`;
const stepKey = (runId: string, step: string) => `${runPrefix(runId)}/steps/${step}.json`;

export async function readStep(store: Store, runId: string, step: string): Promise<StepRecord | undefined> {
  const raw = await store.readDoc(stepKey(runId, step));
  return raw === undefined ? undefined : StepRecordSchema.parse(raw);
}

async function complete(store: Store, rec: StepRecord): Promise<boolean> {
  for (const r of Object.values(rec.outputs)) if (!(await store.has(r))) return false;
  return true;
}

/** A finished step's record for this input, from this run or from a run it may reuse. */
export async function findStep(store: Store, runId: string, step: string, fp: string, reuseFrom: string[] = []): Promise<StepRecord | undefined> {
  for (const run of [runId, ...reuseFrom]) {
    const rec = await readStep(store, run, step);
    if (!rec) continue;
    if (rec.fingerprint !== fp) {
      if (run === runId) {
        throw new RunIdReused(
          `run ${runId} already holds a "${step}" step made from other input: give the new run another id (the old one's artifacts are kept)`,
        );
      }
      continue;
    }
    if (!(await complete(store, rec))) continue;
    if (run === runId) return rec;
    const reused: StepRecord = { ...rec, runId, reusedFrom: run };
    await putStep(store, reused);
    return reused;
  }
  return undefined;
}

/** Writes a step record once: the first complete writer wins, a later (superseded) one adopts it. */
export async function putStep(store: Store, rec: StepRecord): Promise<StepRecord> {
  if (await store.writeDoc(stepKey(rec.runId, rec.step), rec, { ifAbsent: true })) return rec;
  const existing = await readStep(store, rec.runId, rec.step);
  if (!existing || existing.fingerprint !== rec.fingerprint) {
    throw new RunIdReused(`run ${rec.runId} already holds a "${rec.step}" step made from other input`);
  }
  return existing;
}

export async function listSteps(store: Store, runId: string): Promise<StepRecord[]> {
  const out: StepRecord[] = [];
  for (const key of await store.listDocs(`${runPrefix(runId)}/steps`)) {
    const raw = await store.readDoc(key);
    const rec = StepRecordSchema.safeParse(raw);
    if (rec.success) out.push(rec.data);
  }
  return out.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
}

/**
 * Idempotency in one place: a step whose record exists for the same input returns it untouched
 * (and tells `hooks.reused`); otherwise it runs and its record is written last, so a crash before
 * that simply runs it again.
 */
export async function once<R>(
  store: Store,
  ctx: { runId: string; reuseFrom?: string[] },
  step: string,
  fp: string,
  inputs: Record<string, ArtifactRef>,
  run: () => Promise<{ outputs: Record<string, ArtifactRef>; result: R }>,
  hooks: { reused?(record: StepRecord): void } = {},
): Promise<R> {
  const done = await findStep(store, ctx.runId, step, fp, ctx.reuseFrom);
  if (done) {
    hooks.reused?.(done);
    return done.result as R;
  }
  const { outputs, result } = await run();
  const rec = await putStep(store, { runId: ctx.runId, step, fingerprint: fp, inputs, outputs, result, finishedAt: new Date().toISOString() });
  return rec.result as R;
}
