import { numbered } from '../store/backend';
import type { Store } from '../store/store';
import { runKey } from '../store/steps';
import {
  AliasEventSchema,
  ModelVersionSchema,
  RetentionSetSchema,
  RunRecordSchema,
  type AliasEvent,
  type ModelVersion,
  type RetentionSet,
  type RunRecord,
} from '../schemas/registry';

const num = (key: string) => Number(/(\d+)\.json$/.exec(key)?.[1] ?? NaN);

/**
 * The model registry of one config `name`, kept in the artifact store: numbered versions (each
 * created once, never changed), an append-only log of the `current` alias (so its history is the
 * audit trail and two writers can never both win the same move), and a record of every run.
 */
export class Registry {
  constructor(
    private readonly store: Store,
    readonly name: string,
  ) {}

  private get prefix() {
    return `registry/${this.name}`;
  }

  async versions(): Promise<ModelVersion[]> {
    const out: ModelVersion[] = [];
    for (const key of await this.store.listDocs(`${this.prefix}/versions`)) out.push(ModelVersionSchema.parse(await this.store.readDoc(key)));
    return out.sort((a, b) => a.version - b.version);
  }

  async version(v: number): Promise<ModelVersion | undefined> {
    const raw = await this.store.readDoc(`${this.prefix}/versions/${numbered(v)}.json`);
    return raw === undefined ? undefined : ModelVersionSchema.parse(raw);
  }

  /** The version made by `runId`, if it made one (a retried step finds it instead of adding another). */
  async byRun(runId: string): Promise<ModelVersion | undefined> {
    return (await this.versions()).find((v) => v.runId === runId);
  }

  /** Adds the next version number; create-if-absent makes concurrent adders take different numbers. */
  async add(v: Omit<ModelVersion, 'version' | 'name'>): Promise<ModelVersion> {
    for (;;) {
      const existing = await this.byRun(v.runId);
      if (existing) return existing;
      const keys = await this.store.listDocs(`${this.prefix}/versions`);
      const next = (keys.length ? Math.max(...keys.map(num)) : 0) + 1;
      const full = ModelVersionSchema.parse({ ...v, name: this.name, version: next });
      if (await this.store.writeDoc(`${this.prefix}/versions/${numbered(next)}.json`, full, { ifAbsent: true })) return full;
    }
  }

  async aliasLog(): Promise<AliasEvent[]> {
    const out: AliasEvent[] = [];
    for (const key of await this.store.listDocs(`${this.prefix}/aliases/current`)) out.push(AliasEventSchema.parse(await this.store.readDoc(key)));
    return out.sort((a, b) => a.seq - b.seq);
  }

  async current(): Promise<ModelVersion | undefined> {
    const last = (await this.aliasLog()).at(-1);
    return last?.version ? this.version(last.version) : undefined;
  }

  /** Moves `current` (to a version, or to none: the base model). */
  async setCurrent(version: number | null, by: AliasEvent['by'], reason: string, runId?: string): Promise<AliasEvent> {
    for (;;) {
      const log = await this.aliasLog();
      const last = log.at(-1);
      const ev: AliasEvent = {
        seq: (last?.seq ?? 0) + 1,
        version,
        previous: last?.version ?? null,
        at: new Date().toISOString(),
        by,
        reason,
        ...(runId ? { runId } : {}),
      };
      if (await this.store.writeDoc(`${this.prefix}/aliases/current/${numbered(ev.seq)}.json`, ev, { ifAbsent: true })) return ev;
    }
  }

  /** Back to the version that was current before the last move. */
  async rollback(reason = 'rolled back by hand'): Promise<AliasEvent> {
    const last = (await this.aliasLog()).at(-1);
    if (!last) throw new Error(`${this.name} has no current model to roll back`);
    return this.setCurrent(last.previous, 'rollback', reason);
  }

  private retentionKey(sample: number, seed: number) {
    return `${this.prefix}/retention/${sample}-${seed}.json`;
  }

  /** The fixed retention set for this sample size and seed, if a run has drawn it. */
  async retentionSet(sample: number, seed: number): Promise<RetentionSet | undefined> {
    const raw = await this.store.readDoc(this.retentionKey(sample, seed));
    return raw === undefined ? undefined : RetentionSetSchema.parse(raw);
  }

  /** Records the set once (create-if-absent): when two runs draw at once, both use the winner's. */
  async fixRetentionSet(set: RetentionSet): Promise<RetentionSet> {
    if (await this.store.writeDoc(this.retentionKey(set.sample, set.seed), RetentionSetSchema.parse(set), { ifAbsent: true })) return set;
    return (await this.retentionSet(set.sample, set.seed))!;
  }

  async recordRun(r: RunRecord): Promise<void> {
    await this.store.writeDoc(`${this.prefix}/runs/${runKey(r.runId)}.json`, RunRecordSchema.parse(r), { ifAbsent: true });
  }

  async runs(): Promise<RunRecord[]> {
    const out: RunRecord[] = [];
    for (const key of await this.store.listDocs(`${this.prefix}/runs`)) out.push(RunRecordSchema.parse(await this.store.readDoc(key)));
    return out.sort((a, b) => a.at.localeCompare(b.at));
  }

  async names(): Promise<string[]> {
    return [...new Set((await this.store.listDocs('registry')).map((k) => k.split('/')[1]))].sort();
  }
}
