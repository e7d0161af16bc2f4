import { z } from 'zod';

/** What crosses workflow history instead of data: where it is, what it hashes to, how big it is. */
export const ArtifactRefSchema = z.object({
  uri: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().nonnegative(),
  count: z.number().int().nonnegative().optional(),
});
export type ArtifactRef = z.infer<typeof ArtifactRefSchema>;

/** One step's record: what it read, what it wrote, and the fingerprint of its input (for reuse on resume). */
export const StepRecordSchema = z.object({
  runId: z.string(),
  step: z.string(),
  fingerprint: z.string(),
  inputs: z.record(z.string(), ArtifactRefSchema),
  outputs: z.record(z.string(), ArtifactRefSchema),
  result: z.unknown(),
  finishedAt: z.string(),
  reusedFrom: z.string().optional(),
});
export type StepRecord = z.infer<typeof StepRecordSchema>;

/** A directory (an adapter, a checkpoint) as one blob: its files, each a blob of its own. */
export const ManifestSchema = z.object({
  kind: z.enum(['adapter', 'checkpoint']),
  files: z.array(z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), ref: ArtifactRefSchema })),
  meta: z.record(z.string(), z.unknown()).default({}),
});
export type Manifest = z.infer<typeof ManifestSchema>;
