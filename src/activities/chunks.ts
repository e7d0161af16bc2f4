import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import pLimit from 'p-limit';
import { atomicWrite, parseJsonl } from '../artifacts/store';
import { ModelCallError, classifyError } from '../model/client';
import { attempt, heartbeat, previousHeartbeat, toFailure } from './context';

export interface ChunkProgress {
  /** Which pass of the activity (an activity such as evaluate runs more than one). */
  phase: string;
  chunksDone: number;
  chunksTotal: number;
  itemsDone: number;
  /** Chunks found flushed when this attempt started: what a retry did not have to redo. */
  resumedAtChunk: number;
}

export interface ItemFailure {
  id: string;
  error: string;
}

/**
 * Works through `items` chunk by chunk, flushing each finished chunk to its own file before
 * heartbeating. A retried attempt skips the chunks already on disk, so a crash re-does at most the
 * chunk that was in flight. Items whose call keeps failing are returned as failures once the
 * activity reaches `giveUpAtAttempt`, so they are reported instead of blocking the run for ever.
 */
export async function runChunked<I extends { id: string }, O>(opts: {
  dir: string;
  items: I[];
  chunkSize: number;
  concurrency: number;
  giveUpAtAttempt: number;
  work: (item: I) => Promise<O>;
  onChunk?: (p: ChunkProgress) => void;
}): Promise<(O | ItemFailure)[]> {
  const { dir, items, chunkSize } = opts;
  mkdirSync(dir, { recursive: true });
  const chunksTotal = Math.ceil(items.length / chunkSize);
  const chunkFile = (k: number) => join(dir, `chunk-${String(k).padStart(6, '0')}.jsonl`);
  const limit = pLimit(opts.concurrency);
  const lastAttempt = attempt() >= opts.giveUpAtAttempt;
  const results: (O | ItemFailure)[] = [];
  let itemsDone = 0;
  // The flushed chunk files are the truth; the last heartbeat says how far the previous attempt got.
  const last = previousHeartbeat<ChunkProgress>();
  let resumedAtChunk = 0;
  while (resumedAtChunk < chunksTotal && existsSync(chunkFile(resumedAtChunk))) resumedAtChunk++;
  if (last && last.phase === basename(dir) && last.chunksDone > resumedAtChunk) {
    throw new Error(`heartbeat says ${last.chunksDone} chunks were flushed but ${dir} has ${resumedAtChunk}: is the artifact store shared by all workers?`);
  }
  for (let k = 0; k < chunksTotal; k++) {
    const slice = items.slice(k * chunkSize, (k + 1) * chunkSize);
    if (existsSync(chunkFile(k))) {
      results.push(...parseJsonl<O | ItemFailure>(readFileSync(chunkFile(k), 'utf8')));
      itemsDone += slice.length;
      continue;
    }
    const settled = await Promise.allSettled(slice.map((item) => limit(() => opts.work(item))));
    const out: (O | ItemFailure)[] = [];
    let retryLater: ModelCallError | undefined;
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') return out.push(s.value);
      const err = classifyError(s.reason, { baseUrl: '', name: '' });
      if (err.kind === 'fatal') throw toFailure(err);
      if (err.kind === 'transient' && !lastAttempt) retryLater ??= err;
      out.push({ id: slice[i].id, error: err.message });
    });
    if (retryLater) throw toFailure(retryLater);
    atomicWrite(chunkFile(k), out.map((o) => JSON.stringify(o)).join('\n') + '\n');
    results.push(...out);
    itemsDone += slice.length;
    const progress: ChunkProgress = { phase: basename(dir), chunksDone: k + 1, chunksTotal, itemsDone, resumedAtChunk };
    heartbeat(progress);
    opts.onChunk?.(progress);
  }
  return results;
}

export function isFailure(x: unknown): x is ItemFailure {
  return typeof x === 'object' && x !== null && 'error' in x && typeof (x as ItemFailure).error === 'string';
}

export function listChunkFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('chunk-')) : [];
}
