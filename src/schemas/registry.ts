import { z } from 'zod';
import { ArtifactRefSchema } from './artifacts';

const AccuracySchema = z.object({ correct: z.number(), total: z.number(), ungradeable: z.number(), accuracy: z.number(), low: z.number(), high: z.number() });

/** One tuned model of a config, with where it came from, how it scored and what the gate decided. */
export const ModelVersionSchema = z.object({
  name: z.string(),
  version: z.number().int().positive(),
  createdAt: z.string(),
  runId: z.string(),
  base: z.string(),
  adapter: ArtifactRefSchema,
  /** The version this one continued (a chained run), if any. */
  parent: z.number().int().positive().optional(),
  dataSha: z.string(),
  trainItems: z.number().int().nonnegative(),
  steps: z.number().int().nonnegative(),
  trainSeconds: z.number().nonnegative(),
  runtime: z.record(z.string(), z.unknown()).default({}),
  evaluation: z.object({
    items: z.number().int(),
    base: AccuracySchema,
    current: AccuracySchema.optional(),
    tuned: AccuracySchema,
    retention: AccuracySchema.optional(),
    /** sha256 of the fixed retention set the retention figure is measured on. */
    retentionSet: z.string().optional(),
    gain: z.number(),
    forgetting: z.number().optional(),
    pValue: z.number().optional(),
    /** With `grader: judge`: the judge against the rule grader on the run's answers (κ null when undefined). */
    judgeAgreement: z
      .object({ items: z.number().int(), kappa: z.number().nullable(), low: z.number().nullable(), high: z.number().nullable(), words: z.string() })
      .optional(),
  }),
  decision: z.object({ promoted: z.boolean(), reason: z.string() }),
});
export type ModelVersion = z.infer<typeof ModelVersionSchema>;

/**
 * The config's fixed retention set: items the model knew (answered right, not trained on), drawn
 * once by the first run that needed it and then asked again after every tuning, so every version's
 * retention is measured on the same items however the dataset grows. Never trained on.
 */
export const RetentionSetSchema = z.object({
  items: ArtifactRefSchema,
  count: z.number().int().nonnegative(),
  /** The draw: the `sample` candidates with the smallest seeded draw (filter.seed). */
  sample: z.number().int().nonnegative(),
  seed: z.number().int(),
  /** Which items were candidates, in words (the knowledge levels the first run did not train on). */
  drawnFrom: z.string(),
  runId: z.string(),
  at: z.string(),
});
export type RetentionSet = z.infer<typeof RetentionSetSchema>;

/** A move of the `current` alias: by the promotion gate, or by hand (`slearn models promote|rollback`). */
export const AliasEventSchema = z.object({
  seq: z.number().int().positive(),
  version: z.number().int().positive().nullable(),
  previous: z.number().int().positive().nullable(),
  at: z.string(),
  by: z.enum(['gate', 'promote', 'rollback']),
  runId: z.string().optional(),
  reason: z.string(),
});
export type AliasEvent = z.infer<typeof AliasEventSchema>;

/** Every finished run of a config: what it saw and what came of it (the history page, "nothing new"). */
export const RunRecordSchema = z.object({
  runId: z.string(),
  at: z.string(),
  dataSha: z.string(),
  /** The settings that decide what is learnt (see `settingsSha`); absent in records of older runs, which then never count as the same. */
  settingsSha: z.string().optional(),
  currentVersion: z.number().int().positive().nullable(),
  outcome: z.enum(['promoted', 'refused', 'nothing-new', 'no-training', 'recorded']),
  version: z.number().int().positive().optional(),
  reason: z.string(),
  tunedAccuracy: z.number().optional(),
  retention: z.number().optional(),
});
export type RunRecord = z.infer<typeof RunRecordSchema>;
