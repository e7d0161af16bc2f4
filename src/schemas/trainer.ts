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
export const DistributedSchema = z.enum(['ddp', 'fsdp']);
export const GradientCheckpointingSchema = z.enum(['auto', 'on', 'off']);
export const AttentionSchema = z.enum(['auto', 'flash', 'sdpa', 'eager']);

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
  saveSteps: z
    .number()
    .int()
    .min(0)
    .optional()
    .meta(flag('--save-steps', 'optimiser steps between checkpoints; 0: by time only (default: 20 on CPU, 0 on CUDA)')),
  saveMinutes: z
    .number()
    .positive()
    .optional()
    .meta(flag('--save-minutes', 'minutes of training between checkpoints, whichever of steps and minutes comes first (default: none on CPU, 10 on CUDA)')),
  logSeconds: z
    .number()
    .min(0)
    .optional()
    .meta(flag('--log-seconds', 'seconds between progress events, each with the mean loss since the last; 0: every step (default: 0 on CPU, 5 on CUDA)')),
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
  distributed: DistributedSchema.default('ddp').meta(
    flag('--distributed', 'under torchrun (several processes): ddp, a replica of the base per GPU; fsdp, the base sharded across the GPUs'),
  ),
  gradientCheckpointing: GradientCheckpointingSchema.default('auto').meta(
    flag(
      '--gradient-checkpointing',
      'recompute activations in the backward pass; auto: on CUDA when the activations would take over half the GPU memory left after loading, off on CPU',
    ),
  ),
  attention: AttentionSchema.default('auto').meta(
    flag('--attention', 'attention kernel; auto: flash (flash-attn) on CUDA in bf16/fp16 where it is installed, else sdpa'),
  ),
  chatTemplate: z
    .string()
    .min(1)
    .optional()
    .meta(flag('--chat-template', 'a Jinja chat template file, for a base whose tokenizer has none (or to replace its own)')),
});
export type TrainArgs = z.infer<typeof TrainArgsSchema>;

/** What the activity always sets itself: a workflow's input can never override these. */
export const ACTIVITY_OWNED_ARGS = ['base', 'data', 'out', 'initAdapter', 'lateData', 'chatTemplate'] as const;

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
  chatTemplate: z
    .string()
    .min(1)
    .optional()
    .meta(flag('--chat-template', 'a Jinja chat template file, for a base whose tokenizer has none (the one it was trained with)')),
});
export type ServeArgs = z.infer<typeof ServeArgsSchema>;

/** What the trainer and server ran on: `python -m slearn_trainer info`, and the start event. */
export const GpuSchema = z.object({ name: z.string(), memoryBytes: z.number() });
export const RuntimeInfoSchema = z.object({
  device: z.enum(['cuda', 'cpu']),
  precision: z.enum(['bf16', 'fp16', 'fp32']),
  torch: z.string(),
  /** The CUDA version torch was built for (null: a CPU-only build). */
  cuda: z.string().nullable(),
  gpus: z.array(GpuSchema),
  bf16Supported: z.boolean(),
  /** Why CUDA cannot be used here, as torch says it (a driver older than `cuda`, no driver, no GPU); null when it can. */
  cudaUnavailable: z.string().nullable().optional(),
  /** The NVIDIA kernel driver loaded on this host (/proc/driver/nvidia/version), null without one. */
  driver: z.string().nullable().optional(),
  /** Optional packages present: flash-attn (train.attention auto) and bitsandbytes (train.quantization 4bit). */
  flashAttention: z.boolean().optional(),
  bitsandbytes: z.boolean().optional(),
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
    /** Training processes (torchrun ranks), and how the configured batch is split among them. */
    processes: z.number().int().positive().optional(),
    per_device_batch: z.number().int().positive().optional(),
    gradient_accumulation: z.number().int().positive().optional(),
    /** per_device_batch × gradient_accumulation × processes: the config's batch × accumulation, whatever the process count. */
    effective_batch: z.number().int().positive().optional(),
    distributed: z.enum(['none', 'ddp', 'fsdp']).optional(),
    gradient_checkpointing: z.boolean().optional(),
    attention: z.string().optional(),
    gpus: z.array(GpuSchema).optional(),
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
    launcher: LAUNCHER,
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

/**
 * How several training processes start on one host: torch's own launcher (torchrun), one process
 * per GPU, each told its rank through the environment (RANK, LOCAL_RANK, WORLD_SIZE). `--standalone`
 * rendezvouses on a free local port, so two trainings on one host never meet; a rank that dies ends
 * the group (no restarts), and the activity's retry resumes from the newest checkpoint.
 */
export const LAUNCHER = { module: 'torch.distributed.run', args: ['--standalone'], processesFlag: '--nproc-per-node' } as const;

/**
 * The command that starts `processes` copies of a trainer under torchrun. A trainer run as
 * `PYTHON -m MODULE ...` is started as torchrun's module; any other command (SLEARN_TRAINER may name
 * one) is started as it is (`--no-python`), by `python`, the interpreter that has torch.
 */
export function launchArgv(trainer: string[], processes: number, python = 'python3'): string[] {
  if (processes <= 1) return trainer;
  const torchrun = (py: string) => [py, '-m', LAUNCHER.module, ...LAUNCHER.args, LAUNCHER.processesFlag, String(processes)];
  if (trainer.length >= 3 && trainer[1] === '-m') return [...torchrun(trainer[0]), '-m', ...trainer.slice(2)];
  return [...torchrun(python), '--no-python', ...trainer];
}

/**
 * Where and how a training ran, as the run result, the report and the registry entry record it:
 * what `info` and the trainer's start event said, the host, the speed. `processes` × `perDeviceBatch`
 * × `gradientAccumulation` is `effectiveBatch`, the config's batch × accumulation whatever the count.
 */
export type TrainRuntime = Partial<RuntimeInfo> & {
  host?: string;
  tokensPerSecond?: number;
  peakMemoryBytes?: number;
  processes?: number;
  perDeviceBatch?: number;
  gradientAccumulation?: number;
  effectiveBatch?: number;
  distributed?: 'none' | 'ddp' | 'fsdp';
  gradientCheckpointing?: boolean;
  attention?: string;
};
