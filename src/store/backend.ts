import type { Readable } from 'node:stream';

/**
 * The raw storage under a `Store`: keys are '/'-separated names below the store's root, checked
 * by `checkKey`. Two implementations: a local directory and S3-compatible object storage. Hashing,
 * verification and JSON live one level up, in `Store`, so both backends behave the same.
 */
export interface StoreBackend {
  /** `file:///abs/dir` or `s3://bucket/prefix`: what users write in `artifacts:`. */
  readonly url: string;
  /** Where `Store` spools a blob before it is published: same filesystem as the store when local. */
  spoolDir(): string;
  /**
   * Publishes the local file `path` (already hashed: `sha256`, `bytes`) at `key`, unless an intact
   * object is there. The object becomes visible only once complete and verified; `path` is consumed.
   */
  publish(key: string, path: string, info: { sha256: string; bytes: number }): Promise<void>;
  /**
   * Writes a small object whole. With `ifAbsent`, returns false (and writes nothing) when `key`
   * exists. `durable: false` skips fsync: for work in progress that a power cut may lose (it is
   * redone) but a killed worker never does.
   */
  put(key: string, body: Buffer, opts?: { ifAbsent?: boolean; durable?: boolean }): Promise<boolean>;
  /** The object's bytes as a stream, or undefined when there is none. */
  get(key: string): Promise<Readable | undefined>;
  /** Size in bytes, or undefined when there is none. */
  size(key: string): Promise<number | undefined>;
  delete(key: string): Promise<void>;
  /** Every key below `prefix` (which ends with '/'), sorted. */
  list(prefix: string): Promise<string[]>;
  /** Throws with what to fix when the store cannot be reached or written. */
  probe(): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$/;

/** Keys are plain relative names: no '..', no empty or hidden segments, nothing a path could escape with. */
export function checkKey(key: string, prefix = false): string {
  const parts = key.split('/');
  if (prefix && parts.at(-1) === '') parts.pop();
  if (!parts.length || !parts.every((p) => SEGMENT.test(p))) throw new Error(`not a valid store key: ${JSON.stringify(key)}`);
  return key;
}

/** A number in a store key, zero-padded so that keys list in number order (parts, versions, generations). */
export const numbered = (n: number, digits = 6): string => String(n).padStart(digits, '0');
