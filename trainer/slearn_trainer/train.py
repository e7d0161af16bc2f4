"""`python -m slearn_trainer train`: LoRA SFT (TRL + PEFT) with resumable checkpoints.

Events on stdout (see events.py and contract.json). Checkpoints are HF Trainer checkpoints in
OUT/checkpoint-N; a checkpoint counts only once `slearn-complete.json` is in it (written last,
atomically, from the on_save callback, i.e. after the Trainer finished writing every file).
Incomplete checkpoints (killed mid-save) are deleted on start. The final adapter is written to
a temp dir and renamed to OUT/adapter. OUT/slearn_run.json fingerprints the settings, so a rerun
resumes only a run trained the same way.

The loss is on the answer only (TRL's completion-only loss). With --packing TRL 1.16 builds the
labels before it packs (best-fit decreasing, sequence boundaries kept through position ids), so
the prompt tokens stay masked there too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from . import contract, device, modelload
from .events import FatalError, emit

log = logging.getLogger("slearn_trainer.train")

MARKER = "slearn-complete.json"
ADAPTER_INFO = "slearn_training.json"
RUN_CONFIG = "slearn_run.json"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
ROLES = {"system", "user", "assistant"}
WATCH_STDIN_ENV = "SLEARN_TRAINER_WATCH_STDIN"
# --report-to X needs one of these modules (the package to install first)
REPORT_TO_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
# Settings that do not change what is learned: a rerun with other values still resumes.
NOT_FINGERPRINTED = {"data", "out", "initAdapter", "lateData", "saveSteps", "device", "precision", "reportTo"}
LEGACY_KEYS = {"lr": "learning_rate"}  # slearn_run.json of older versions


class DataError(FatalError):
    """Bad training data or arguments: not retryable."""


# ---------------------------------------------------------------- data


def read_chat_jsonl(path: str) -> list[dict]:
    """Validate OpenAI chat JSONL; return [{"prompt": [...], "completion": [last assistant msg]}]."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--data {path}: file not found")
    errors: list[str] = []
    rows: list[dict] = []
    with open(p, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
                errors.append(f'{where}: messages: expected an object {{"messages": [...]}}')
                continue
            msgs = obj["messages"]
            bad = False
            clean = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in ROLES:
                    errors.append(f"{where}: messages[{i}].role: must be one of system, user, assistant")
                    bad = True
                    break
                if not isinstance(m.get("content"), str):
                    errors.append(f"{where}: messages[{i}].content: must be a string")
                    bad = True
                    break
                clean.append({"role": m["role"], "content": m["content"]})
            if bad:
                continue
            if len(clean) < 2 or clean[-1]["role"] != "assistant":
                errors.append(f"{where}: messages: must end with an assistant message after at least one user message")
                continue
            if not any(m["role"] == "user" for m in clean[:-1]):
                errors.append(f"{where}: messages: needs a user message before the final assistant message")
                continue
            if not clean[-1]["content"].strip():
                errors.append(f"{where}: messages[{len(clean) - 1}].content: the assistant answer is empty")
                continue
            rows.append({"prompt": clean[:-1], "completion": [clean[-1]], "_line": no})
            if len(errors) >= 20:
                break
    if errors:
        more = "" if len(errors) < 20 else " (stopped after 20 errors)"
        raise DataError("invalid training data: " + "; ".join(errors) + more)
    if not rows:
        raise DataError(f"--data {path}: no training examples (empty file)")
    return rows


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- checkpoints


def _atomic_write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_complete(d: Path) -> bool:
    return (
        (d / MARKER).is_file()
        and (d / "trainer_state.json").is_file()
        and (d / "adapter_model.safetensors").is_file()
        and (d / "adapter_config.json").is_file()
        and (d / "optimizer.pt").is_file()
    )


def scan_checkpoints(out: Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint, incomplete checkpoint dirs)."""
    complete, incomplete = [], []
    if out.is_dir():
        for d in out.iterdir():
            m = CKPT_RE.match(d.name)
            if m and d.is_dir():
                (complete if checkpoint_complete(d) else incomplete).append((int(m.group(1)), d))
    complete.sort()
    return (complete[-1][1] if complete else None), [d for _, d in incomplete]


def adapter_complete(d: Path) -> bool:
    return all((d / n).is_file() for n in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_INFO))


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
    started us died and its end of the pipe closed, so an orphaned trainer does not train on."""
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


def preflight(args) -> device.Runtime:
    """Everything that can be refused without loading a model: device, precision, quantization,
    the --report-to integration and the --init-adapter directory."""
    runtime = device.resolve(args.device, args.precision)
    device.check_quantization(args.quantization, runtime.device, device.installed("bitsandbytes"))
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


def run_config(args, data_sha: str) -> dict:
    """What the run learns from: everything but where it runs and how it reports (the fingerprint)."""
    cfg = {
        contract.dest(k): getattr(args, contract.dest(k))
        for k in contract.CONTRACT["train"]["properties"]
        if k not in NOT_FINGERPRINTED
    }
    cfg["data_sha256"] = data_sha
    cfg["late_data_sha256"] = file_sha256(args.late_data) if args.late_data else None
    cfg["init_adapter_sha256"] = (
        file_sha256(str(Path(args.init_adapter) / "adapter_model.safetensors")) if args.init_adapter else None
    )
    return cfg


def _check_run_config(out: Path, cfg: dict) -> None:
    """Refuse to resume an --out dir trained with other settings; then record ours."""
    path = out / RUN_CONFIG
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        old = None
    if isinstance(old, dict):
        props = contract.CONTRACT["train"]["properties"]
        defaults = {contract.dest(k): p.get("default") for k, p in props.items()}
        old = {LEGACY_KEYS.get(k, k): v for k, v in old.items()}
        diff = sorted(k for k in set(old) | set(cfg) if old.get(k, defaults.get(k)) != cfg.get(k, defaults.get(k)))
        if diff:
            flags = {contract.dest(k): p["flag"] for k, p in props.items()} | {
                "data_sha256": "--data (its contents)",
                "late_data_sha256": "--late-data (its contents)",
            }
            changed = ", ".join(flags.get(k, k) for k in diff)
            raise DataError(
                f"--out {out} holds a training run with different settings ({changed}); "
                "use a new output directory or delete the old one"
            )
    _atomic_write_json(path, cfg)


def late_order(rows: list[dict], late: list[dict], epochs: float, seed: int) -> list[dict]:
    """Every epoch of `rows` laid out in one sequence (each epoch shuffled with `seed`), with the
    `late` rows put at random places in its second half: trained once, in the later part of
    training only (KnownPatch). Trained as one epoch in this order, so a resumed run skips exactly
    what it already saw."""
    rng = random.Random(seed)
    order: list[dict] = []
    for _ in range(math.ceil(epochs)):
        epoch = rows[:]
        rng.shuffle(epoch)
        order += epoch
    order = order[: max(1, round(epochs * len(rows)))]
    half = len(order) // 2
    for r in late:
        order.insert(rng.randint(half, len(order)), r)
    return order


def sft_config(args, runtime: device.Runtime, out: Path, laid_out: bool = False):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out),
        # a late-data run is laid out by late_order(): one pass over that sequence, in its order
        num_train_epochs=1 if laid_out else args.epochs,
        train_sampling_strategy="sequential" if laid_out else "random",
        max_steps=args.max_steps or -1,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=args.save_steps,
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
        # Recomputing activations saves GPU memory for large bases; on a CPU host memory is not what
        # runs out, and the recomputation costs about a third of every step.
        gradient_checkpointing=runtime.device == "cuda",
        max_length=args.max_seq_len,
        packing=args.packing,
        completion_only_loss=True,
        # packed batches are padding-free (no attention mask, and the pad token also ends each turn)
        include_num_input_tokens_seen="all" if args.packing else "non_padding",
    )


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=lora_targets(args.lora_targets),
    )


def load_model(args, runtime: device.Runtime):
    """(model, tokenizer): the base, with the --init-adapter made trainable when there is one."""
    model, tok, _ = modelload.load_model_and_tokenizer(args.base, runtime, args.quantization)
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


def _check_prompt_lengths(rows, tok, args, path: str | None = None) -> None:
    """Reject examples whose prompt does not leave room for the answer."""
    for r in rows:
        ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
        n = len(ids["input_ids"])
        if n >= args.max_seq_len - 1:
            raise DataError(
                f"{path or args.data}:{r['_line']}: messages: the prompt has {n} tokens, which leaves no room for the "
                f"answer within --max-seq-len {args.max_seq_len}; shorten it or raise --max-seq-len"
            )


# ---------------------------------------------------------------- main


def _events_callback(out: Path, runtime: device.Runtime, prev_seconds: float, t_start: float, epoch_scale: float = 1.0):
    from transformers import TrainerCallback

    class Events(TrainerCallback):
        """start / progress / checkpoint events, and the completion marker of each checkpoint."""

        tokens0 = 0
        t_begin = t_start

        def tokens(self, state) -> int:
            return int(state.num_input_tokens_seen - self.tokens0)

        def tokens_per_second(self, state) -> float:
            return round(self.tokens(state) / max(time.time() - self.t_begin, 1e-9), 1)

        def on_train_begin(self, a, state, control, **kw):
            self.tokens0, self.t_begin = state.num_input_tokens_seen, time.time()
            emit(
                "start",
                total_steps=state.max_steps,
                resumed_from_step=state.global_step,
                device=runtime.device,
                precision=runtime.precision,
            )

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                emit(
                    "progress",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    loss=float(logs["loss"]),
                    epoch=float(logs.get("epoch", state.epoch or 0.0)) * epoch_scale,
                    tokens=self.tokens(state),
                )

        def on_save(self, a, state, control, **kw):
            ckpt = out / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                _atomic_write_json(
                    ckpt / MARKER,
                    {
                        "step": state.global_step,
                        "train_seconds": prev_seconds + (time.time() - t_start),
                    },
                )
                if checkpoint_complete(ckpt):
                    emit("checkpoint", step=state.global_step, path=str(ckpt))

    return Events()


def _prepare_out(out: Path) -> tuple[Path | None, float]:
    """Remove what killed processes left; (newest complete checkpoint, its train seconds)."""
    for d in out.glob(".adapter.tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
    if (out / "adapter").exists():
        shutil.rmtree(out / "adapter", ignore_errors=True)
    resume, incomplete = scan_checkpoints(out)
    for d in incomplete:
        log.warning("removing incomplete checkpoint %s", d)
        shutil.rmtree(d, ignore_errors=True)
    if resume is None:
        return None, 0.0
    try:
        return resume, float(json.loads((resume / MARKER).read_text()).get("train_seconds", 0.0))
    except (ValueError, OSError):
        return resume, 0.0


def _save_adapter(model, adapter_dir: Path, info: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.tmp-", dir=adapter_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        (tmp / ADAPTER_INFO).write_text(json.dumps(info, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, adapter_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


DONE_FIELDS = ("steps", "train_seconds", "tokens_per_second", "peak_memory_bytes")


def run(args) -> int:
    _install_signal_handlers()
    _watch_parent()
    runtime = preflight(args)  # before anything heavy
    out = Path(args.out).resolve()
    adapter_dir = out / "adapter"
    rows = read_chat_jsonl(args.data)
    late = read_chat_jsonl(args.late_data) if args.late_data else []
    cfg = run_config(args, file_sha256(args.data))
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, cfg)

    if adapter_complete(adapter_dir):  # finished before: report it again, train nothing
        info = json.loads((adapter_dir / ADAPTER_INFO).read_text())
        emit("start", total_steps=info["steps"], resumed_from_step=info["steps"])
        emit("done", adapter=str(adapter_dir), **{k: info[k] for k in DONE_FIELDS if info.get(k) is not None})
        return 0

    resume, prev_seconds = _prepare_out(out)

    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    model, tok = load_model(args, runtime)
    _check_prompt_lengths(rows, tok, args)
    _check_prompt_lengths(late, tok, args, args.late_data)
    examples = late_order(rows, late, args.epochs, args.seed) if late else rows
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in examples])

    set_seed(args.seed)
    t_start = time.time()
    # a laid-out run is one pass: its progress events still count the epochs the user asked for
    events = _events_callback(out, runtime, prev_seconds, t_start, args.epochs if late else 1.0)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(args, runtime, out, laid_out=bool(late)),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=None if args.init_adapter else lora_config(args),
        callbacks=[events],
    )
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    done = {
        "steps": int(state.global_step),
        "train_seconds": round(prev_seconds + (time.time() - t_start), 3),
        "tokens_per_second": events.tokens_per_second(state),
    }
    if runtime.device == "cuda":
        done["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    _save_adapter(
        trainer.model,
        adapter_dir,
        {
            **cfg,
            **done,
            "examples": len(rows),
            "late_examples": len(late),
            "final_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        },
    )
    emit("done", adapter=str(adapter_dir), **done)
    return 0
