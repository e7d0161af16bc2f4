import { readDataset } from '../dataset/read';
import { formatProblem } from '../problems';
import { ApplicationFailure } from '@temporalio/common';
import { ArtifactStore } from '../artifacts/store';
import type { RunInput, PreparedRef } from '../schemas/run';
import type { Item } from '../schemas/dataset';
import type { ArtifactRef } from '../schemas/artifacts';
import { fingerprint, onceper, type StepCtx } from './context';


function readOrRefuse(file: string): Item[] {
  const { items, problems } = readDataset(file);
  if (problems.length) {
    throw ApplicationFailure.nonRetryable(`invalid dataset:\n${problems.map(formatProblem).join('\n')}`, 'InvalidInput');
  }
  return items;
}

/** Validates and normalises the datasets, stores them, and cuts the training items into shards. */
export async function prepare(input: RunInput & { runId: string }): Promise<PreparedRef> {
  const store = new ArtifactStore(input.artifactRoot);
  const configRef = store.writeJson(input.config);
  const ctx: StepCtx = { runId: input.runId, root: store.root, config: configRef, ...(input.reuseFrom?.length ? { reuseFrom: input.reuseFrom } : {}) };
  const items = readOrRefuse(input.config.dataset);
  const evalItems = input.config.eval ? readOrRefuse(input.config.eval) : items;
  // The datasets' content, not their paths, decides whether an earlier prepare can be reused.
  const itemsRef = store.writeJsonl(items);
  const evalRef = input.config.eval ? store.writeJsonl(evalItems) : itemsRef;
  const fp = fingerprint('prepare', itemsRef.sha256, evalRef.sha256, input.config.shardSize);
  const result = await onceper(store, ctx, 'prepare', fp, { dataset: itemsRef }, async () => {
    const size = input.config.shardSize;
    const shardRefs: ArtifactRef[] = [];
    for (let s = 0; s * size < items.length; s++) shardRefs.push(store.writeJsonl(items.slice(s * size, (s + 1) * size)));
    const shardIndex = store.writeJsonl(shardRefs);
    const prepared: Omit<PreparedRef, 'ctx'> = { items: itemsRef, evalItems: evalRef, shardIndex, shards: shardRefs.length, evalIsDataset: !input.config.eval };
    return { outputs: { items: itemsRef, eval: evalRef, shardIndex }, result: prepared };
  });
  return { ...result, ctx };
}

/** Shard `s` of a prepared run, found through the shard index written by prepare. */
export function shardItems(store: ArtifactStore, runId: string, shard: number): Item[] {
  const rec = store.readStep(runId, 'prepare');
  if (!rec) throw ApplicationFailure.nonRetryable(`run ${runId} has no prepare record in ${store.root}`, 'MissingArtifact');
  const index = store.readJsonl<ArtifactRef>(rec.outputs.shardIndex);
  if (!index[shard]) throw ApplicationFailure.nonRetryable(`shard ${shard} does not exist in run ${runId}`, 'BadShard');
  return store.readJsonl<Item>(index[shard]);
}
