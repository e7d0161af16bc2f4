import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { scanDataset } from '../dataset/read';
import { loadConfig } from '../config';
import { InvalidInput, RunIdReused } from '../errors';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Config } from '../schemas/config';
import type { Item } from '../schemas/dataset';
import type { Prepared, RunInput, StepCtx } from '../schemas/run';
import { fingerprint, once, runPrefix } from '../store/steps';
import type { Store } from '../store/store';
import type { StepEnv } from './env';
import { checkConfig, checkStore } from './policy';

/** Most shards per run: their references travel in workflow state, which must stay far below 2 MiB. */
export const MAX_SHARDS = 4096;

/** A stable draw in [0, 1) per item: the held-out split and every sample stay put as the dataset grows. */
export function draw(seed: number, id: string, salt = ''): number {
  return createHash('sha256').update(`${salt}:${seed}:${id}`).digest().readUInt32BE(0) / 2 ** 32;
}

/**
 * Without an eval file, an item is held out when its seeded draw is at or below this threshold: the
 * configured fraction, raised only as far as `minEval` needs. As a dataset grows the threshold never
 * rises, so an item trained on in one run is never held out in a later run of the same config (which
 * would flatter the model in service and any adapter chained from it); held-out items may only move
 * to training, once the fraction alone holds out `minEval` items.
 */
export function splitThreshold(draws: number[], split: Pick<Config['split'], 'evalFraction' | 'minEval'>): number {
  const sorted = [...draws].sort((a, b) => a - b);
  const threshold = Math.max(split.evalFraction, sorted[Math.min(sorted.length, split.minEval) - 1] ?? 1);
  const held = sorted.filter((d) => d <= threshold).length;
  if (split.minEval >= sorted.length || held >= sorted.length)
    throw new InvalidInput(
      `the dataset has ${sorted.length} items: too few to hold out ${Math.max(split.minEval, held)} for evaluation and train on the rest; add an \`eval\` file or more items`,
    );
  return threshold;
}

/** The config as the worker reads it: today's file, with the run's overrides, checked against the worker's policy. */
export function readConfig(env: StepEnv, input: Pick<RunInput, 'configFile' | 'overrides' | 'store'>): Config {
  let config: Config;
  try {
    config = loadConfig(input.configFile, { overrides: input.overrides as Record<string, unknown>, checkKeys: false, defaultStore: input.store }).config;
  } catch (e) {
    if (e instanceof InvalidInput && e.problems.length) throw new InvalidInput(e.problems, 'invalid config:');
    throw e;
  }
  checkConfig(env.policy, config, input.configFile);
  return config;
}

async function readOrRefuse(store: Store, file: string, config: Config, onItem: (item: Item) => void): Promise<{ ref: ArtifactRef; notices: string[] }> {
  const w = await store.writer();
  let scan;
  try {
    scan = await scanDataset(
      file,
      (item) => {
        onItem(item);
        return w.row(item);
      },
      { columns: config.columns },
    );
  } catch (e) {
    await w.abort();
    throw e;
  }
  // Problems are reported by location and field only: item text never reaches a failure message.
  if (scan.problems.length) {
    await w.abort();
    throw new InvalidInput(scan.problems, 'invalid dataset:');
  }
  return { ref: await w.finish(w.rows), notices: scan.notices };
}

type Scanned = Awaited<ReturnType<typeof readOrRefuse>>;

/** One run id, one input: a reused id with other data must never pick up the old run's work. */
async function guardRunId(store: Store, runId: string, guard: { dataSha: string; config: string }): Promise<void> {
  if (await store.writeDoc(`${runPrefix(runId)}/input.json`, guard, { ifAbsent: true })) return;
  const old = await store.readDoc<typeof guard>(`${runPrefix(runId)}/input.json`);
  if (old?.dataSha !== guard.dataSha || old.config !== guard.config) {
    throw new RunIdReused(`run id ${runId} was used before with other config or data: start the new run under another id`);
  }
}

/**
 * Holds out the evaluation split (unless there is an eval file) and cuts the training items into
 * shards. Shards come in multiples of the lanes that run them, of equal size, so every lane finishes
 * at about the same time instead of the last shards running alone at a fraction of the concurrency.
 */
async function holdOutAndShard(store: Store, config: Config, all: Scanned, evalScan: Scanned | undefined, draws: number[]) {
  const threshold = evalScan ? -1 : splitThreshold(draws, config.split);
  const trainCount = evalScan ? draws.length : draws.filter((d) => d > threshold).length;
  const lanes = config.shardConcurrency;
  const shardCount = Math.min(trainCount, lanes * Math.max(1, Math.round(Math.ceil(trainCount / config.shardSize) / lanes)));
  const size = Math.max(1, Math.ceil(trainCount / Math.max(1, shardCount)));
  const held: Item[] = [];
  const shards: ArtifactRef[] = [];
  let shard: Item[] = [];
  let train = 0;
  for await (const item of store.jsonl<Item>(all.ref)) {
    if (!evalScan && draw(config.split.seed, item.id, 'split') <= threshold) {
      held.push(item);
      continue;
    }
    train++;
    shard.push(item);
    if (shard.length === size) {
      shards.push(await store.putJsonl(shard));
      shard = [];
    }
  }
  if (shard.length) shards.push(await store.putJsonl(shard));
  if (shards.length > MAX_SHARDS)
    throw new InvalidInput(`${train} items in shards of ${config.shardSize} make ${shards.length} shards (at most ${MAX_SHARDS}): raise shardSize`);
  const evalItems = evalScan ? evalScan.ref : await store.putJsonl(held);
  return { train, evalItems, shards: shards.length, shardIndex: await store.putJsonl(shards) };
}

/**
 * Validates and normalises the datasets, stores them, holds out an evaluation split when there is
 * no eval file, and cuts the training items into shards. Everything streams: memory stays bounded
 * by a shard, not by the dataset.
 */
export async function prepare(env: StepEnv, input: RunInput & { runId: string }): Promise<Prepared> {
  checkStore(env.policy, input.store);
  const config = readConfig(env, input);
  const store = await env.store(input.store);
  const configRef = await store.putJson(config);
  // The training host has no access to the config's files: the chat template travels as a blob.
  const chatTemplate = config.train.chatTemplate ? await store.putBytes(await readFile(config.train.chatTemplate)) : undefined;
  const ctx: StepCtx = {
    runId: input.runId,
    store: input.store,
    config: configRef,
    ...(input.reuseFrom?.length ? { reuseFrom: input.reuseFrom } : {}),
    ...(chatTemplate ? { chatTemplate } : {}),
  };

  const draws: number[] = [];
  const all = await readOrRefuse(store, config.dataset, config, (item) => draws.push(draw(config.split.seed, item.id, 'split')));
  const evalFile = config.eval;
  const evalScan = evalFile ? await readOrRefuse(store, evalFile, config, () => undefined) : undefined;
  const dataSha = fingerprint(all.ref.sha256, evalScan?.ref.sha256 ?? null, evalFile ? null : config.split);
  await guardRunId(store, input.runId, { dataSha, config: configRef.sha256 });

  const fp = fingerprint('prepare', all.ref.sha256, evalScan?.ref.sha256 ?? null, evalFile ? null : config.split, config.shardSize, config.shardConcurrency);
  const inputs = { dataset: all.ref, ...(evalScan ? { eval: evalScan.ref } : {}) };
  const result = await once(
    store,
    ctx,
    'prepare',
    fp,
    inputs,
    async () => {
      const cut = await holdOutAndShard(store, config, all, evalScan, draws);
      const prepared: Omit<Prepared, 'ctx'> = {
        dataset: all.ref,
        trainItems: cut.train,
        evalItems: cut.evalItems,
        shardIndex: cut.shardIndex,
        shards: cut.shards,
        evalSource: evalScan ? 'file' : 'split',
        dataSha,
        notices: [...all.notices, ...(evalScan?.notices ?? [])],
        endpoint: config.model,
        shardConcurrency: config.shardConcurrency,
      };
      return { outputs: { items: all.ref, eval: cut.evalItems, shardIndex: cut.shardIndex }, result: prepared };
    },
    env,
  );
  return { ...result, ctx };
}

/** Shard `s` of a prepared run, through the shard index prepare wrote. */
export async function shardRef(store: Store, prepared: Pick<Prepared, 'shardIndex'>, shard: number): Promise<ArtifactRef> {
  let i = 0;
  for await (const ref of store.jsonl<ArtifactRef>(prepared.shardIndex)) if (i++ === shard) return ref;
  throw new InvalidInput(`shard ${shard} does not exist`);
}
