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
