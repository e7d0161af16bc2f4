import { z } from 'zod';

/** An OpenAI-compatible endpoint. The key is never in the config, only the NAME of the variable holding it. */
export const EndpointSchema = z.strictObject({
  baseUrl: z.url({ message: 'must be a URL such as http://127.0.0.1:8000/v1' }),
  name: z.string().min(1, 'give the model name the endpoint serves'),
  apiKeyEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be the NAME of an environment variable, not the key itself')
    .optional(),
  timeoutSeconds: z.number().positive().max(3600).default(60),
});

export const AnswerSchema = z.strictObject({
  samples: z.number().int().min(1).max(32).default(1),
  temperature: z.number().min(0).max(2).default(0),
  maxTokens: z.number().int().min(1).max(4096).default(64),
  concurrency: z.number().int().min(1).max(256).default(4),
  /** Items answered between two flushes: a crash re-asks at most this many. */
  chunkSize: z.number().int().min(1).max(1000).default(8),
  systemPrompt: z.string().default('Answer the question with a short phrase only.'),
});

export const GraderSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('match'), f1Threshold: z.number().min(0).max(1).default(0.8) }),
  z.strictObject({
    type: z.literal('judge'),
    threshold: z.number().min(0).max(1).default(0.5),
    /** Defaults to the model under adaptation, as in the paper. */
    model: EndpointSchema.optional(),
    /** Re-asks when the judge's output does not fit the schema, before the item is ungradeable. */
    attempts: z.number().int().min(1).max(10).default(3),
  }),
]);

export const FilterSchema = z.strictObject({
  knownThreshold: z.number().min(0).max(1).default(1.0),
  replayKnownFraction: z.number().min(0).max(1).default(0),
  seed: z.number().int().default(0),
});

export const TrainSchema = z.strictObject({
  /** What the trainer loads; defaults to model.name (the embedded server and vLLM use the same name). */
  base: z.string().min(1).optional(),
  epochs: z.number().int().min(1).max(100).default(3),
  learningRate: z.number().positive().max(1).default(2e-4),
  loraR: z.number().int().min(1).max(1024).default(16),
  loraAlpha: z.number().int().min(1).max(4096).default(32),
  saveSteps: z.number().int().min(1).default(20),
  seed: z.number().int().default(42),
  /** Extra `--flag value` pairs passed to the trainer as they are. */
  extraArgs: z.array(z.string()).default([]),
});

export const ConfigSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" and "-" only (it names runs and folders)'),
  dataset: z.string().min(1),
  eval: z.string().min(1).optional(),
  model: EndpointSchema,
  answer: AnswerSchema.default(AnswerSchema.parse({})),
  grader: GraderSchema.default({ type: 'match', f1Threshold: 0.8 }),
  filter: FilterSchema.default(FilterSchema.parse({})),
  train: TrainSchema.default(TrainSchema.parse({})),
  shardSize: z.number().int().min(1).max(100_000).default(64),
  /** Shards in flight at once, so a million items never means thousands of pending activities. */
  shardConcurrency: z.number().int().min(1).max(500).default(4),
  artifacts: z.string().optional(),
});

export type Endpoint = z.infer<typeof EndpointSchema>;
export type Config = z.infer<typeof ConfigSchema>;
export type GraderConfig = z.infer<typeof GraderSchema>;
