"""`python -m slearn_trainer train`: LoRA SFT (TRL + PEFT) with resumable checkpoints.

One process, or one per GPU under torchrun (distributed.py): the same code, each process on its
LOCAL_RANK device, rank 0 the only one that prints events (events.py), writes checkpoint markers and
saves the adapter. `run()` reads as the steps of a training:

    preflight (refuse what cannot work before loading anything) → join the process group
    → read and fingerprint the data → report a finished run again, or clean the output directory
    → load the base onto the device → plan (batch split, kernels, memory, intervals)
    → train (resuming from the newest complete checkpoint) → save the adapter → done

The loss is on the answer only (TRL's completion-only loss). With --packing TRL 1.16 builds the
labels before it packs (best-fit decreasing, sequence boundaries kept through position ids), so
the prompt tokens stay masked there too. Checkpoints and the output directory: checkpoints.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints, contract, data, device, distributed, events, modelload
from .arguments import TrainArguments
from .callbacks import Intervals, TrainingEvents
from .data import DataError
from .events import FatalError, emit

log = logging.getLogger("slearn_trainer.train")

WATCH_STDIN_ENV = "SLEARN_TRAINER_WATCH_STDIN"
# --report-to X needs one of these modules (the package to install first)
REPORT_TO_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
# Settings that do not change what is learned: a rerun with other values still resumes.
NOT_FINGERPRINTED = {
    "data",
    "out",
    "initAdapter",
    "lateData",
    "chatTemplate",  # fingerprinted by its contents
    "saveSteps",
    "saveMinutes",
    "logSeconds",
    "device",
    "precision",
    "reportTo",
    "gradientCheckpointing",
    "attention",
}
# CPU runs as before: a checkpoint every 20 steps, a progress event every step. A CUDA run of an 8B
# base saves ~0.5 GB of adapter and optimizer state per checkpoint, so it saves by time: at most
# 10 minutes of training lost to a failure whatever the model size, for a few seconds of writing.
CPU_INTERVALS = {"save_steps": 20, "save_minutes": 0.0, "log_seconds": 0.0}
CUDA_INTERVALS = {"save_steps": 0, "save_minutes": 10.0, "log_seconds": 5.0}
# auto gradient checkpointing: on when the activations of one micro-batch, estimated, would take more
# than this share of the GPU memory left after the base is loaded
CHECKPOINTING_SHARE = 0.5
DONE_FIELDS = ("steps", "train_seconds", "tokens_per_second", "peak_memory_bytes")


# ---------------------------------------------------------------- process lifetime


def _stop(message: str, code: int) -> None:
    """Exit now, retryably. Safe at any point: checkpoints are only trusted once their marker is
    written and the adapter is renamed into place, so nothing half-written looks complete."""
    try:
        emit("error", message=message + "; rerun the same command to resume from the last checkpoint", retryable=True)
    finally:
        os._exit(code)


def _install_signal_handlers() -> None:
    def handler(signum, frame):
        _stop(f"interrupted by {signal.Signals(signum).name}", 128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _watch_parent() -> None:
    """With SLEARN_TRAINER_WATCH_STDIN=1, stop as on SIGTERM when stdin reaches EOF: the worker that
    started us died and its end of the pipe closed, so an orphaned trainer does not train on. Under
    torchrun every rank inherits the pipe and watches it."""
    if os.environ.get(WATCH_STDIN_ENV) != "1":
        return

    def watch():
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        _stop("the process that started the trainer is gone (stdin closed)", 128 + signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


# ---------------------------------------------------------------- settings


def preflight(args: TrainArguments, ranks: distributed.Ranks | None = None) -> device.Runtime:
    """Everything that can be refused without loading a model: device, precision, quantization,
    attention, the batch split, the --report-to integration and the --init-adapter directory."""
    ranks = ranks or distributed.Ranks()
    runtime = device.resolve(args.device, args.precision, ranks.local_rank)
    device.check_quantization(args.quantization, runtime.device, device.installed("bitsandbytes"))
    device.check_attention(args.attention, runtime.device, runtime.precision)
    distributed.split_batch(args.batch_size, args.gradient_accumulation, ranks.world_size)
    modules = REPORT_TO_MODULES.get(args.report_to, ())
    if modules and not any(device.installed(m) for m in modules):
        raise FatalError(f"--report-to {args.report_to} needs the {modules[0]} package: pip install {modules[0]}")
    if args.init_adapter:
        d = Path(args.init_adapter)
        if not ((d / "adapter_config.json").is_file() and (d / "adapter_model.safetensors").is_file()):
            raise FatalError(
                f"--init-adapter {args.init_adapter}: not a PEFT adapter directory "
                "(expected adapter_config.json and adapter_model.safetensors)"
            )
    if args.chat_template and not Path(args.chat_template).is_file():
        raise FatalError(f"--chat-template {args.chat_template}: file not found")
    lora_targets(args.lora_targets)
    return runtime


def lora_targets(spec: str):
    """--lora-targets: PEFT's "all-linear", or a list of module names."""
    if spec.strip() == "all-linear":
        return "all-linear"
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise FatalError(f"--lora-targets {spec!r}: expected all-linear or comma-separated module names")
    return names


def run_config(args: TrainArguments, data_sha: str) -> dict:
    """What the run learns from: everything but where it runs and how it reports (the fingerprint)."""
    cfg = {
        contract.dest(k): getattr(args, contract.dest(k))
        for k in contract.CONTRACT["train"]["properties"]
        if k not in NOT_FINGERPRINTED
    }
    cfg["data_sha256"] = data_sha
    cfg["late_data_sha256"] = data.file_sha256(args.late_data) if args.late_data else None
    cfg["init_adapter_sha256"] = (
        data.file_sha256(str(Path(args.init_adapter) / "adapter_model.safetensors")) if args.init_adapter else None
    )
    if args.chat_template:  # absent when there is none: fingerprints of runs without one stay as they were
        cfg["chat_template_sha256"] = data.file_sha256(args.chat_template)
    return cfg


@dataclass(frozen=True)
class Plan:
    """How this training runs here: decided once the base is loaded, the same on every rank."""

    runtime: device.Runtime
    ranks: distributed.Ranks
    per_device_batch: int
    gradient_accumulation: int
    gradient_checkpointing: bool
    attention: str
    save_steps: int
    save_seconds: float
    log_seconds: float
    gpus: list = field(default_factory=list)

    @property
    def effective_batch(self) -> int:
        return self.per_device_batch * self.gradient_accumulation * self.ranks.world_size

    def start_fields(self, distributed_mode: str) -> dict:
        """What the `start` event says about where and how the training runs."""
        return {
            "device": self.runtime.device,
            "precision": self.runtime.precision,
            "processes": self.ranks.world_size,
            "per_device_batch": self.per_device_batch,
            "gradient_accumulation": self.gradient_accumulation,
            "effective_batch": self.effective_batch,
            "distributed": distributed_mode if self.ranks.distributed else "none",
            "gradient_checkpointing": self.gradient_checkpointing,
            "attention": self.attention,
            **({"gpus": self.gpus} if self.gpus else {}),
        }


def activation_bytes(config, tokens: int, dtype_bytes: int) -> int:
    """Estimated activation memory of one micro-batch of `tokens` tokens kept for the backward pass
    of a Llama-shaped decoder without recomputation: per layer and token about 6 hidden-size and 4
    intermediate-size tensors (norm outputs, q/k/v/o inputs, the MLP's gate, up, product and down
    input). The logits are left out: TRL's fused LM head computes the loss in chunks, never the whole
    batch × vocabulary at once."""
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    return layers * (6 * hidden + 4 * inter) * dtype_bytes * tokens


def use_gradient_checkpointing(
    setting: str, runtime: device.Runtime, model_config, tokens: int, free_bytes: int | None
) -> bool:
    """`on`/`off` as said; `auto`: on CUDA when the estimated activations of one micro-batch exceed
    half the GPU memory free after loading the base (the recomputation costs about a third more
    compute, running out of memory costs the run), off on CPU (memory is not what runs out there,
    and recomputation would cost a third of every step)."""
    if setting != "auto":
        return setting == "on"
    if runtime.device != "cuda" or free_bytes is None:
        return False
    need = activation_bytes(model_config, tokens, runtime.dtype.itemsize)
    return need > CHECKPOINTING_SHARE * free_bytes


def intervals(args: TrainArguments, runtime: device.Runtime) -> tuple[int, float, float]:
    """(save every N steps, save every S seconds, log every L seconds): what was asked, the
    device's defaults for the rest. A run with neither a step nor a time interval saves at its end."""
    d = CUDA_INTERVALS if runtime.device == "cuda" else CPU_INTERVALS
    save_steps = d["save_steps"] if args.save_steps is None else args.save_steps
    save_minutes = d["save_minutes"] if args.save_minutes is None else args.save_minutes
    log_seconds = d["log_seconds"] if args.log_seconds is None else args.log_seconds
    return save_steps, save_minutes * 60.0, log_seconds


def make_plan(args: TrainArguments, runtime, ranks, model) -> Plan:
    per_device, accumulation = distributed.split_batch(args.batch_size, args.gradient_accumulation, ranks.world_size)
    free = None
    if runtime.device == "cuda":
        import torch

        free = torch.cuda.mem_get_info(runtime.index)[0]
    gc = use_gradient_checkpointing(
        args.gradient_checkpointing, runtime, model.config, per_device * args.max_seq_len, free
    )
    save_steps, save_seconds, log_seconds = intervals(args, runtime)
    return Plan(
        runtime=runtime,
        ranks=ranks,
        per_device_batch=per_device,
        gradient_accumulation=accumulation,
        gradient_checkpointing=gc,
        attention=getattr(model.config, "_attn_implementation", None) or "sdpa",
        save_steps=save_steps,
        save_seconds=save_seconds,
        log_seconds=log_seconds,
        gpus=device.gpus(ranks.local_world_size) if runtime.device == "cuda" else [],
    )


# Never reached by a step count (HF needs a positive interval): the clock (Intervals) decides instead.
NEVER_BY_STEPS = 10**12


def fsdp_settings(args: TrainArguments, plan: Plan) -> dict:
    """SFTConfig keys for FSDP (FSDP2 through accelerate): decoder layers sharded, full state dicts
    in checkpoints (readable by any number of processes), activation checkpointing by FSDP itself."""
    if not (plan.ranks.distributed and args.distributed == "fsdp"):
        return {}
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "cpu_ram_efficient_loading": True,
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "activation_checkpointing": plan.gradient_checkpointing,
        },
    }


def sft_config(args: TrainArguments, plan: Plan, out: Path, laid_out: bool = False):
    """TRL's SFTConfig for this plan. `laid_out`: a late-data run, trained as one pass over
    data.late_order()'s sequence, in its order."""
    from trl import SFTConfig

    runtime = plan.runtime
    fsdp = fsdp_settings(args, plan)
    return SFTConfig(
        output_dir=str(out),
        num_train_epochs=1 if laid_out else args.epochs,
        train_sampling_strategy="sequential" if laid_out else "random",
        max_steps=args.max_steps or -1,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=plan.gradient_accumulation,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=0.0,
        logging_strategy="steps",
        logging_steps=1 if plan.log_seconds == 0 else NEVER_BY_STEPS,
        save_strategy="steps",
        save_steps=plan.save_steps or NEVER_BY_STEPS,
        save_total_limit=2,
        seed=args.seed,
        data_seed=args.seed,
        report_to=args.report_to,
        disable_tqdm=True,
        use_cpu=runtime.device == "cpu",
        bf16=runtime.precision == "bf16",
        fp16=runtime.precision == "fp16",
        dataloader_num_workers=0,
        dataloader_pin_memory=runtime.device == "cuda",
        # every LoRA weight takes part in every step: no search for unused parameters under DDP
        ddp_find_unused_parameters=False,
        activation_checkpointing=plan.gradient_checkpointing and not fsdp,
        activation_checkpointing_kwargs={"use_reentrant": False},  # the form DDP and PEFT agree with
        max_length=args.max_seq_len,
        packing=args.packing,
        completion_only_loss=True,
        # packed batches are padding-free (no attention mask, and the pad token also ends each turn)
        include_num_input_tokens_seen="all" if args.packing else "non_padding",
        **fsdp,
    )


def lora_config(args: TrainArguments):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=lora_targets(args.lora_targets),
    )


def load_model(args: TrainArguments, runtime: device.Runtime, *, sharded: bool = False):
    """(model, tokenizer): the base on this process's device, with the --init-adapter made
    trainable when there is one."""
    attention = device.check_attention(args.attention, runtime.device, runtime.precision)
    model, tok, _ = modelload.load_model_and_tokenizer(
        args.base,
        runtime,
        args.quantization,
        attention=attention,
        chat_template=args.chat_template,
        sharded=sharded,
    )
    targets = lora_targets(args.lora_targets)
    if not args.init_adapter and targets != "all-linear":
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [t for t in targets if t not in present]
        if missing:
            raise FatalError(f"--lora-targets: {', '.join(missing)} not found in the model {args.base}")
    if args.init_adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, args.init_adapter, is_trainable=True)
        except (ValueError, RuntimeError, KeyError) as e:
            raise FatalError(f"--init-adapter {args.init_adapter} does not fit --base {args.base}: {e}") from e
    return model, tok


# ---------------------------------------------------------------- the phases of run()


@dataclass
class Inputs:
    rows: list
    late: list
    cfg: dict


def read_inputs(args: TrainArguments, out: Path, ranks: distributed.Ranks) -> Inputs:
    """The data, validated, and the run's fingerprint, checked against what --out holds (rank 0
    checks and records it; the others wait)."""
    rows = data.read_chat_jsonl(args.data)
    late = data.read_chat_jsonl(args.late_data) if args.late_data else []
    cfg = run_config(args, data.file_sha256(args.data))
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints.check_run_config(out, cfg)
    distributed.barrier()
    return Inputs(rows, late, cfg)


def report_finished(adapter_dir: Path, ranks: distributed.Ranks) -> bool:
    """A run finished before: say so again (start, done) and train nothing."""
    if not checkpoints.adapter_complete(adapter_dir):
        return False
    if ranks.is_main:
        info = json.loads((adapter_dir / checkpoints.ADAPTER_INFO).read_text())
        emit("start", total_steps=info["steps"], resumed_from_step=info["steps"])
        emit("done", adapter=str(adapter_dir), **{k: info[k] for k in DONE_FIELDS if info.get(k) is not None})
    return True


def resume_point(out: Path, ranks: distributed.Ranks) -> tuple[Path | None, float]:
    """The newest complete checkpoint (after rank 0 cleaned up what killed processes left, and gave
    every rank of this group an RNG state in it), and the training seconds before it."""
    if ranks.is_main:
        resume, _ = checkpoints.prepare_out(out)
        if resume is not None:
            checkpoints.share_rng_states(resume, ranks.world_size)
    distributed.barrier()
    resume, _ = checkpoints.scan_checkpoints(out)
    return resume, checkpoints.train_seconds(resume)


def build_trainer(args: TrainArguments, plan: Plan, out: Path, model, tok, inputs: Inputs, previous_seconds: float):
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    laid_out = bool(inputs.late)
    examples = data.late_order(inputs.rows, inputs.late, args.epochs, args.seed) if laid_out else inputs.rows
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in examples])
    set_seed(args.seed)
    events_cb = TrainingEvents(
        out,
        start_fields=plan.start_fields(args.distributed),
        previous_seconds=previous_seconds,
        # a laid-out run is one pass: its progress events still count the epochs the user asked for
        epoch_scale=args.epochs if laid_out else 1.0,
        is_main=plan.ranks.is_main,
    )
    intervals_cb = Intervals(
        save_steps=plan.save_steps,
        save_seconds=plan.save_seconds,
        log_seconds=plan.log_seconds,
        device=plan.runtime.torch_device,
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_config(args, plan, out, laid_out=laid_out),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=None if args.init_adapter else lora_config(args),
        callbacks=[events_cb, intervals_cb],
    )
    return trainer, events_cb


def save_final(trainer, args: TrainArguments, plan: Plan, adapter_dir: Path, info: dict) -> None:
    """The adapter, written by rank 0 (under FSDP every rank first gathers the full weights)."""
    fsdp = bool(fsdp_settings(args, plan))
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if fsdp else None
    if plan.ranks.is_main:
        model = trainer.accelerator.unwrap_model(trainer.model)
        checkpoints.save_adapter(lambda d: model.save_pretrained(d, state_dict=state_dict), adapter_dir, info)
    distributed.barrier()


def run(args: TrainArguments) -> int:
    _install_signal_handlers()
    _watch_parent()
    distributed.die_with_launcher()
    ranks = distributed.ranks()
    runtime = preflight(args, ranks)  # before anything heavy
    if ranks.distributed:
        distributed.init_process_group(runtime.device, ranks.local_rank)
    out = Path(args.out).resolve()
    adapter_dir = out / "adapter"
    inputs = read_inputs(args, out, ranks)
    if report_finished(adapter_dir, ranks):
        return 0
    resume, previous_seconds = resume_point(out, ranks)

    import torch

    if args.distributed == "fsdp" and ranks.distributed:
        os.environ["ACCELERATE_USE_FSDP"] = "true"  # the base's weights reach the others from rank 0
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
    model, tok = load_model(args, runtime, sharded=args.distributed == "fsdp" and ranks.distributed)
    data.check_prompt_lengths(inputs.rows, tok, max_seq_len=args.max_seq_len, path=args.data)
    data.check_prompt_lengths(inputs.late, tok, max_seq_len=args.max_seq_len, path=args.late_data or "")
    events.all_ranks_report_errors()  # from here on a rank can fail on its own (its GPU's memory)
    plan = make_plan(args, runtime, ranks, model)
    trainer, events_cb = build_trainer(args, plan, out, model, tok, inputs, previous_seconds)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    state = trainer.state
    done = {
        "steps": int(state.global_step),
        "train_seconds": round(events_cb.train_seconds(), 3),
        "tokens_per_second": events_cb.tokens_per_second(state),
    }
    if runtime.device == "cuda":
        done["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(runtime.index))
    info = {
        **inputs.cfg,
        **done,
        "examples": len(inputs.rows),
        "late_examples": len(inputs.late),
        "final_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        **plan.start_fields(args.distributed),
    }
    save_final(trainer, args, plan, adapter_dir, info)
    if ranks.is_main:
        emit("done", adapter=str(adapter_dir), **done)
    distributed.destroy()
    return 0


__all__ = ["DataError", "Plan", "preflight", "run", "sft_config"]
