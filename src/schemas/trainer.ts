import { z } from 'zod';

/**
 * The trainer contract (DESIGN.md, "Trainer contract"), defined once. TypeScript builds the
 * trainer's argv from `TrainArgsSchema` and parses its stdout with `TrainerEventSchema`; the Python
 * side reads the JSON generated from this file (`trainer/slearn_trainer/contract.json`, written by
 * `npm run schemas`) to build its argument parser and to check the events it writes. A jest test
 * fails when the committed JSON and this file drift apart.
 *
 * Each argument names its command-line flag in `.meta({ flag })`: the flags are the contract's
 * spelling (`--lr`, `--lora-r`), the keys are the one name used everywhere else.
 */

const flag = (f: string, description: string) => ({ flag: f, description });

/** Limits the embedded server enforces, shared with the config schema so `validate` refuses the same. */
export const SERVER_LIMITS = {
  /** Completions per request (`n`). */
  maxN: 16,
  /** `max_tokens` per completion. */
  maxTokens: 4096,
  /** `n` × `max_tokens`: the most tokens one request may ask the model to generate. */
  maxGeneratedTokensPerRequest: 16_384,
  /** Request body bytes. */
  maxBodyBytes: 1 << 20,
  /** Serialised `response_format.json_schema` bytes. */
  maxSchemaBytes: 16_384,
  /** Adapters loaded at once. */
  maxAdapters: 8,
  /** Requests waiting for the model before the server answers 429 with Retry-After. */
  maxQueue: 64,
} as const;

export const DeviceSchema = z.enum(['auto', 'cuda', 'cpu']);
export const PrecisionSchema = z.enum(['auto', 'bf16', 'fp16', 'fp32']);
export const ReportToSchema = z.enum(['none', 'tensorboard', 'mlflow', 'wandb']);
export const QuantizationSchema = z.enum(['none', '4bit']);

export const TrainArgsSchema = z.strictObject({
  base: z.string().min(1).meta(flag('--base', 'embedded alias (smollm2-135m-instruct), a .gguf file, a local Hugging Face model directory, or a Hub id')),
  data: z.string().min(1).meta(flag('--data', 'training set, OpenAI chat JSON Lines ({"messages": [...]})')),
  out: z.string().min(1).meta(flag('--out', 'output directory: checkpoint-N/ and adapter/')),
  epochs: z.number().positive().default(3).meta(flag('--epochs', 'passes over the training set')),
  learningRate: z.number().positive().default(2e-4).meta(flag('--lr', 'peak learning rate')),
  loraR: z.number().int().min(1).default(16).meta(flag('--lora-r', 'LoRA rank')),
  loraAlpha: z.number().int().min(1).default(32).meta(flag('--lora-alpha', 'LoRA alpha')),
  loraDropout: z.number().min(0).max(1).default(0).meta(flag('--lora-dropout', 'LoRA dropout')),
  loraTargets: z.string().min(1).default('all-linear').meta(flag('--lora-targets', 'modules to adapt: all-linear, or comma-separated module names')),
  saveSteps: z.number().int().min(1).default(20).meta(flag('--save-steps', 'steps between checkpoints')),
  seed: z.number().int().default(42).meta(flag('--seed', 'random seed')),
  device: DeviceSchema.default('auto').meta(flag('--device', 'auto: CUDA when present, else CPU')),
  precision: PrecisionSchema.default('auto').meta(flag('--precision', 'auto: bf16 where the GPU supports it, fp16 on other GPUs, fp32 on CPU')),
  batchSize: z.number().int().min(1).default(4).meta(flag('--batch-size', 'examples per device step')),
  gradientAccumulation: z.number().int().min(1).default(1).meta(flag('--grad-accum', 'device steps per optimiser step')),
  maxSeqLen: z.number().int().min(8).default(512).meta(flag('--max-seq-len', 'tokens per example (prompt + answer)')),
  maxSteps: z.number().int().min(0).default(0).meta(flag('--max-steps', 'stop after this many steps (0: all epochs)')),
  initAdapter: z.string().min(1).optional().meta(flag('--init-adapter', 'continue training this adapter directory (a chained run)')),
  lateData: z
    .string()
    .min(1)
    .optional()
    .meta(flag('--late-data', 'more examples (OpenAI chat JSON Lines), mixed into the second half of training only: known items patched in late (KnownPatch)')),
  warmupRatio: z
    .number()
    .min(0)
    .lt(1)
    .default(0)
    .meta(flag('--warmup-ratio', 'share of the steps over which the learning rate rises linearly from 0 to its peak')),
  reportTo: ReportToSchema.default('none').meta(flag('--report-to', "TRL's report_to")),
  quantization: QuantizationSchema.default('none').meta(flag('--quantization', '4bit: QLoRA through bitsandbytes (an optional extra; CUDA only)')),
  packing: z.boolean().default(false).meta(flag('--packing', 'pack several short examples into one sequence')),
});
export type TrainArgs = z.infer<typeof TrainArgsSchema>;

/** What the activity always sets itself: a workflow's input can never override these. */
export const ACTIVITY_OWNED_ARGS = ['base', 'data', 'out', 'initAdapter', 'lateData'] as const;

export const ServeArgsSchema = z.strictObject({
  base: z.string().min(1).meta(flag('--base', 'the model to serve (same forms as train --base)')),
  adapter: z
    .array(z.string().regex(/^[^=]+=.+$/))
    .default([])
    .meta(flag('--adapter', 'NAME=PATH, repeatable: adapters loaded at start')),
  host: z.string().default('127.0.0.1').meta(flag('--host', 'address to listen on')),
  port: z.number().int().min(0).max(65535).default(8000).meta(flag('--port', '0 picks a free port')),
  servedName: z.string().min(1).default('smollm2-135m-instruct').meta(flag('--served-name', 'model name in /v1/models')),
  device: DeviceSchema.default('auto').meta(flag('--device', 'auto: CUDA when present, else CPU')),
  precision: PrecisionSchema.default('auto').meta(flag('--precision', 'auto: bf16 where the GPU supports it, fp16 on other GPUs, fp32 on CPU')),
  maxBatch: z.number().int().min(1).default(16).meta(flag('--max-batch', 'requests per batched generate')),
  batchWindowMs: z.number().min(0).default(5).meta(flag('--batch-window-ms', 'how long to gather a batch')),
  apiKeyEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
    .optional()
    .meta(flag('--api-key-env', 'NAME of a variable holding the bearer token clients must send')),
  adapterRoot: z.string().min(1).optional().meta(flag('--adapter-root', 'adapters may be loaded only from below this directory')),
  maxAdapters: z.number().int().min(1).default(SERVER_LIMITS.maxAdapters).meta(flag('--max-adapters', 'adapters loaded at once')),
  maxQueue: z.number().int().min(1).default(SERVER_LIMITS.maxQueue).meta(flag('--max-queue', 'waiting requests before 429 + Retry-After')),
});
export type ServeArgs = z.infer<typeof ServeArgsSchema>;

/** What the trainer and server ran on: `python -m slearn_trainer info`, and the start event. */
export const RuntimeInfoSchema = z.object({
  device: z.enum(['cuda', 'cpu']),
  precision: z.enum(['bf16', 'fp16', 'fp32']),
  torch: z.string(),
  cuda: z.string().nullable(),
  gpus: z.array(z.object({ name: z.string(), memoryBytes: z.number() })),
  bf16Supported: z.boolean(),
});
export type RuntimeInfo = z.infer<typeof RuntimeInfoSchema>;

/** The trainer's stdout, one JSON object per line. */
export const TrainerEventSchema = z.discriminatedUnion('event', [
  z.object({
    event: z.literal('start'),
    total_steps: z.number().int().nonnegative(),
    resumed_from_step: z.number().int().nonnegative(),
    device: z.enum(['cuda', 'cpu']).optional(),
    precision: z.enum(['bf16', 'fp16', 'fp32']).optional(),
  }),
  z.object({
    event: z.literal('progress'),
    step: z.number().int().nonnegative(),
    total_steps: z.number().int().nonnegative(),
    loss: z.number().nullable().optional(),
    epoch: z.number().optional(),
    /** Tokens trained on so far in this process (for tokens/s). */
    tokens: z.number().int().nonnegative().optional(),
  }),
  z.object({ event: z.literal('checkpoint'), step: z.number().int().nonnegative(), path: z.string() }),
  z.object({
    event: z.literal('done'),
    adapter: z.string(),
    steps: z.number().int().nonnegative(),
    train_seconds: z.number().nonnegative(),
    tokens_per_second: z.number().nonnegative().optional(),
    peak_memory_bytes: z.number().int().nonnegative().optional(),
  }),
  z.object({ event: z.literal('error'), message: z.string(), retryable: z.boolean().optional() }),
]);
export type TrainerEvent = z.infer<typeof TrainerEventSchema>;

function argsJson(schema: z.ZodObject) {
  const json = z.toJSONSchema(schema, { io: 'input' }) as { properties: Record<string, Record<string, unknown>>; required?: string[] };
  delete (json as Record<string, unknown>).$schema;
  return json;
}

/** The JSON both sides read: `trainer/slearn_trainer/contract.json`. */
export function contractJson() {
  const events = z.toJSONSchema(TrainerEventSchema) as Record<string, unknown>;
  const info = z.toJSONSchema(RuntimeInfoSchema) as Record<string, unknown>;
  delete events.$schema;
  delete info.$schema;
  return {
    $comment: 'Generated from src/schemas/trainer.ts by `npm run schemas`; do not edit by hand.',
    train: argsJson(TrainArgsSchema),
    serve: argsJson(ServeArgsSchema),
    events,
    info,
    limits: SERVER_LIMITS,
  };
}

/** argv for `slearn_trainer train` from typed arguments, flags spelled as the contract says. */
export function trainArgv(args: TrainArgs): string[] {
  const argv: string[] = ['train'];
  const shape = TrainArgsSchema.shape as Record<string, z.ZodType>;
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined) continue;
    const meta = shape[key]?.meta() as { flag?: string } | undefined;
    if (!meta?.flag) throw new Error(`trainer argument ${key} has no flag in the contract`);
    if (typeof value === 'boolean') {
      if (value) argv.push(meta.flag);
    } else argv.push(meta.flag, String(value));
  }
  return argv;
}
