import { z } from 'zod';
import { ColumnsSchema } from './dataset';
import {
  AttentionSchema,
  DeviceSchema,
  DistributedSchema,
  GradientCheckpointingSchema,
  PrecisionSchema,
  QuantizationSchema,
  ReportToSchema,
  SERVER_LIMITS,
} from './trainer';

/**
 * Real keys have well-known prefixes and are long and mixed-case (`sk_live_…`, `hf_…`, `ghp_…`,
 * `AKIA…`); variable names are usually UPPER_SNAKE. Used to refuse a pasted key, never to show it.
 */
export function looksLikeSecret(v: string): boolean {
  if (/^(AKIA|ASIA)[A-Z0-9]{16}$/.test(v)) return true;
  return v.length >= 16 && /[a-z]/.test(v) && /^(sk|rk|pk|hf|ghp|gho|ghs|ghu|glpat|xox[abpr])[-_]/i.test(v);
}

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be the NAME of an environment variable, not the key itself')
  // A value shaped like a real key is refused without being echoed (describeIssue never shows it).
  .refine((v) => !looksLikeSecret(v), {
    message: 'looks like a secret key: give the NAME of the environment variable that holds it (e.g. OPENAI_API_KEY)',
  })
  .meta({ description: 'the NAME of an environment variable holding the key; the key itself never enters the config or the workflow history' });

/** An OpenAI-compatible endpoint. The key is never in the config, only the NAME of the variable holding it. */
export const EndpointSchema = z.strictObject({
  baseUrl: z
    .url({ message: 'must be a URL such as http://127.0.0.1:8000/v1' })
    .meta({ description: 'OpenAI-compatible API root (ends in /v1 for most servers)' }),
  name: z.string().min(1, 'give the model name the endpoint serves').meta({ description: 'model name as the endpoint lists it in /v1/models' }),
  apiKeyEnv: envName.optional(),
  timeoutSeconds: z.number().positive().max(3600).default(60).meta({ description: 'per request; slow requests keep their activity alive through heartbeats' }),
});

export const AnswerSchema = z.strictObject({
  samples: z
    .number()
    .int()
    .min(1)
    .max(SERVER_LIMITS.maxN)
    .default(1)
    .meta({ description: 'sampled answers per question at `temperature`, besides the greedy answer; more than 1 needs temperature > 0 (knowledge levels)' }),
  temperature: z.number().min(0).max(2).default(0).meta({ description: 'temperature of the sampled answers (the greedy answer is always at 0)' }),
  maxTokens: z.number().int().min(1).max(SERVER_LIMITS.maxTokens).default(64).meta({ description: 'tokens per answer' }),
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(256)
    .default(4)
    .meta({ description: 'requests in flight per shard; lowered by itself when the endpoint is overloaded (429, timeouts)' }),
  chunkSize: z.number().int().min(1).max(1000).default(32).meta({ description: 'answers at risk per shard: a crash re-asks at most this many' }),
  systemPrompt: z
    .string()
    .default('Answer the question with a short phrase only.')
    .meta({ description: 'asked with every question and taught with every answer' }),
});

export const GraderSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('match'),
    f1Threshold: z.number().min(0).max(1).default(0.8).meta({ description: 'token F1 at or above which an answer counts as correct' }),
    tokens: z.enum(['auto', 'words', 'characters']).default('auto').meta({
      description:
        'how answers are cut into tokens: auto (words, with Chinese, Japanese and Korean script cut into characters), words (whitespace only), characters (every letter or digit)',
    }),
  }),
  z.strictObject({
    type: z.literal('judge'),
    threshold: z.number().min(0).max(1).default(0.5).meta({ description: 'score at or above which a verdict counts as correct' }),
    model: EndpointSchema.optional().meta({ description: 'the judge; by default the model under adaptation, as in the paper' }),
    attempts: z
      .number()
      .int()
      .min(1)
      .max(10)
      .default(3)
      .meta({ description: 're-asks when the verdict does not fit the schema, before the item is ungradeable' }),
  }),
]);

/** Knowledge levels (Gekhman et al. 2024), from the greedy answer and the sampled ones. */
export const LEVELS = ['known', 'maybeKnown', 'weaklyKnown', 'unknown'] as const;
export const LevelSchema = z.enum(LEVELS);
export type Level = z.infer<typeof LevelSchema>;

export const FilterSchema = z.strictObject({
  trainOn: z
    .array(LevelSchema)
    .min(1)
    .default(['weaklyKnown', 'unknown'])
    .meta({ description: 'knowledge levels to train on; the default is what the greedy answer got wrong, as in the paper' }),
  replayFraction: z.number().min(0).max(1).default(0).meta({ description: 'share of the other (known) items mixed into the training set against forgetting' }),
  replayWhen: z.enum(['throughout', 'late']).default('throughout').meta({
    description: 'throughout: replayed items are shuffled with the rest; late: mixed into the second half of training only (KnownPatch)',
  }),
  replayAnswer: z.enum(['reference', 'model']).default('reference').meta({
    description:
      "reference: replayed items are taught their reference answer; model: the model's own greedy answer, which was graded right (self-distillation)",
  }),
  seed: z.number().int().default(0).meta({ description: 'seed of the replay draw' }),
});

export const SplitSchema = z.strictObject({
  evalFraction: z.number().gt(0).lt(1).default(0.1).meta({ description: 'share of the dataset held out for evaluation when there is no `eval` file' }),
  minEval: z.number().int().min(1).default(20).meta({ description: 'at least this many held-out items' }),
  seed: z.number().int().default(0).meta({ description: 'seed of the held-out split (stable across runs of a growing dataset)' }),
});

export const TrainSchema = z.strictObject({
  base: z.string().min(1).optional().meta({ description: 'what the trainer loads; defaults to model.name (the embedded server and vLLM use the same name)' }),
  epochs: z.number().int().min(1).max(100).default(3).meta({ description: 'passes over the training set' }),
  learningRate: z.number().positive().max(1).default(2e-4).meta({ description: 'peak learning rate (linear decay)' }),
  warmupRatio: z
    .number()
    .min(0)
    .lt(1)
    .default(0)
    .meta({ description: 'share of the steps over which the learning rate rises from 0 to its peak (re-warms a chained run)' }),
  loraR: z.number().int().min(1).max(1024).default(16).meta({ description: 'LoRA rank' }),
  loraAlpha: z.number().int().min(1).max(4096).default(32).meta({ description: 'LoRA alpha (scale = alpha / rank)' }),
  loraDropout: z.number().min(0).max(1).default(0).meta({ description: 'dropout on the LoRA path' }),
  loraTargets: z.string().min(1).default('all-linear').meta({ description: 'all-linear, or comma-separated module names' }),
  saveSteps: z
    .number()
    .int()
    .min(0)
    .optional()
    .meta({ description: 'optimiser steps between checkpoints, each uploaded to the store; 0: by time only (default: 20 on CPU, by time on CUDA)' }),
  saveMinutes: z
    .number()
    .positive()
    .optional()
    .meta({ description: 'minutes of training between checkpoints, so a failure loses at most this much (default: 10 on CUDA, none on CPU)' }),
  logSeconds: z
    .number()
    .min(0)
    .optional()
    .meta({ description: 'seconds between progress points (step, mean loss since the last); 0: every step (default: 0 on CPU, 5 on CUDA)' }),
  seed: z.number().int().default(42).meta({ description: 'seed of training and of sampled answers' }),
  device: DeviceSchema.default('auto').meta({ description: 'auto: CUDA when the training host has it, else CPU' }),
  precision: PrecisionSchema.default('auto').meta({ description: 'auto: bf16 where the GPU supports it, fp16 on other GPUs, fp32 on CPU' }),
  batchSize: z
    .number()
    .int()
    .min(1)
    .max(4096)
    .default(4)
    .meta({ description: 'examples per device step (with several processes, at most this many per process)' }),
  gradientAccumulation: z
    .number()
    .int()
    .min(1)
    .max(1024)
    .default(1)
    .meta({ description: 'device steps per optimiser step; with several processes the trainer divides it (or the batch) among them' }),
  maxSeqLen: z.number().int().min(8).max(131072).default(512).meta({ description: 'tokens per example (prompt and answer)' }),
  maxSteps: z.number().int().min(0).default(0).meta({ description: 'stop after this many steps (0: all epochs)' }),
  quantization: QuantizationSchema.default('none').meta({ description: '4bit: QLoRA (bitsandbytes on a CUDA host) for large bases on one GPU' }),
  reportTo: ReportToSchema.default('none').meta({
    description: "TRL's report_to: tensorboard, mlflow or wandb (the package must be installed on the training host)",
  }),
  packing: z.boolean().default(false).meta({ description: 'pack short examples into full sequences' }),
  processes: z
    .union([z.literal('auto'), z.number().int().min(1).max(64)])
    .default('auto')
    .meta({
      description:
        'training processes on the training host, one per GPU, under torchrun; auto: every GPU the host sees, as many as divide the effective batch (1 on CPU). The effective batch (batchSize × gradientAccumulation) stays the same whatever the count',
    }),
  distributed: DistributedSchema.default('ddp').meta({
    description: 'with several processes: ddp, a copy of the base per GPU; fsdp, the base sharded across the GPUs (bases that do not fit one GPU)',
  }),
  gradientCheckpointing: GradientCheckpointingSchema.default('auto').meta({
    description:
      'recompute activations in the backward pass (about a third more compute, far less memory); auto: on CUDA when the activations would take over half the memory left after loading the base, off on CPU',
  }),
  attention: AttentionSchema.default('auto').meta({
    description: 'attention kernel; auto: flash-attention on CUDA in bf16/fp16 where the flash-attn package is installed, else PyTorch SDPA',
  }),
  chatTemplate: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'a Jinja chat template file for a base whose tokenizer has none; used for training and given to the model server' }),
});

export const PromoteSchema = z.strictObject({
  minGain: z
    .number()
    .min(-1)
    .max(1)
    .default(0)
    .meta({ description: 'the tuned model must beat the current one on the held-out set by more than this (accuracy, 0..1)' }),
  maxForgetting: z.number().min(0).max(1).default(0.1).meta({ description: 'at most this share of the retention set (items the model knew) may be lost' }),
  retentionSample: z.number().int().min(0).max(100_000).default(100).meta({ description: 'known items asked again after tuning (0: no retention check)' }),
  enabled: z.boolean().default(true).meta({ description: 'false: record the version, never make it current' }),
});

export const ConfigSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" and "-" only (it names runs and registry entries)')
      .meta({ description: 'names the runs and the registry entry of this adaptation' }),
    dataset: z.string().min(1).meta({ description: 'the domain QA set: JSON Lines, JSON, CSV/TSV, Parquet or a save_to_disk folder' }),
    eval: z.string().min(1).optional().meta({ description: 'held-out evaluation set; without it a seeded split of the dataset is held out' }),
    columns: ColumnsSchema.optional(),
    split: SplitSchema.prefault({}).meta({ description: 'the held-out split, when there is no eval file' }),
    model: EndpointSchema.meta({ description: 'the model under adaptation: any OpenAI-compatible endpoint' }),
    answer: AnswerSchema.prefault({}).meta({ description: 'how the model is asked' }),
    grader: GraderSchema.default({ type: 'match', f1Threshold: 0.8, tokens: 'auto' }).meta({
      description: 'match: normalised exact/alias/containment and token F1; judge: an LLM with a rubric',
    }),
    filter: FilterSchema.prefault({}).meta({ description: 'what is trained on' }),
    train: TrainSchema.prefault({}).meta({ description: 'LoRA fine-tuning (the trainer contract)' }),
    promote: PromoteSchema.prefault({}).meta({ description: 'the promotion gate into the registry' }),
    shardSize: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(2000)
      .meta({ description: 'about this many items per answer-and-grade activity (shard counts are a multiple of shardConcurrency, sizes equal)' }),
    shardConcurrency: z.number().int().min(1).max(500).default(4).meta({ description: 'shards in flight at once' }),
    artifacts: z.string().min(1).optional().meta({ description: 'artifact store: a directory, or s3://bucket/prefix (default .slearn/artifacts)' }),
  })
  .refine((c) => c.answer.samples === 1 || c.answer.temperature > 0, {
    path: ['answer', 'samples'],
    message: 'more than 1 sample needs answer.temperature above 0 (greedy answers are all the same): set a temperature or samples: 1',
  });

export type Endpoint = z.infer<typeof EndpointSchema>;
export type Config = z.infer<typeof ConfigSchema>;
/** What a config file may say: defaults left out. */
export type ConfigInput = z.input<typeof ConfigSchema>;
