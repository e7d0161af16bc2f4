"""`python -m slearn_trainer train`: LoRA SFT (TRL + PEFT) with resumable checkpoints.

Events on stdout (see events.py). Checkpoints are HF Trainer checkpoints in OUT/checkpoint-N;
a checkpoint counts only once `slearn-complete.json` is in it (written last, atomically, from
the on_save callback, i.e. after the Trainer finished writing every file). Incomplete
checkpoints (killed mid-save) are deleted on start. The final adapter is written to a temp
dir and renamed to OUT/adapter.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import modelload  # sets the offline env vars before transformers is imported
from .events import emit

log = logging.getLogger("slearn_trainer.train")

MARKER = "slearn-complete.json"
ADAPTER_INFO = "slearn_training.json"
RUN_CONFIG = "slearn_run.json"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
ROLES = {"system", "user", "assistant"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class DataError(ValueError):
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


# ---------------------------------------------------------------- main


def _install_signal_handlers() -> None:
    def handler(signum, frame):
        name = signal.Signals(signum).name
        try:
            emit("error", message=f"interrupted by {name}; rerun the same command to resume from the last checkpoint",
                 retryable=True)
        finally:
            # Checkpoints are only trusted once their marker is written and the adapter is
            # renamed into place, so exiting at any point leaves nothing that looks complete.
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(args) -> int:
    _install_signal_handlers()
    out = Path(args.out).resolve()
    adapter_dir = out / "adapter"

    # Validate cheap things first, before loading anything heavy.
    for name in ("epochs", "lr", "lora_r", "lora_alpha", "save_steps", "batch_size", "max_seq_len"):
        v = getattr(args, name)
        if v is None or not (v > 0) or (isinstance(v, float) and not math.isfinite(v)):
            raise DataError(f"--{name.replace('_', '-')} must be a positive number (got {v})")
    rows = read_chat_jsonl(args.data)
    data_sha = file_sha256(args.data)

    run_cfg = {
        "base": args.base,
        "data_sha256": data_sha,
        "epochs": args.epochs,
        "lr": args.lr,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len,
        "max_steps": args.max_steps,
    }
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / RUN_CONFIG
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except Exception:
            old = None
        if old is not None and old != run_cfg:
            diff = sorted(k for k in set(old) | set(run_cfg) if old.get(k) != run_cfg.get(k))
            raise DataError(
                f"--out {out} holds a training run with different settings ({', '.join(diff)}); "
                "use a new output directory or delete the old one"
            )
    _atomic_write_json(cfg_path, run_cfg)

    if adapter_complete(adapter_dir):
        info = json.loads((adapter_dir / ADAPTER_INFO).read_text())
        emit("start", total_steps=info["steps"], resumed_from_step=info["steps"])
        emit("done", adapter=str(adapter_dir), steps=info["steps"], train_seconds=info.get("train_seconds", 0.0))
        return 0

    # Clean leftovers of killed processes.
    for d in out.glob(".adapter.tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir, ignore_errors=True)
    resume, incomplete = scan_checkpoints(out)
    for d in incomplete:
        log.warning("removing incomplete checkpoint %s", d)
        shutil.rmtree(d, ignore_errors=True)
    prev_seconds = 0.0
    if resume is not None:
        try:
            prev_seconds = float(json.loads((resume / MARKER).read_text()).get("train_seconds", 0.0))
        except Exception:
            prev_seconds = 0.0

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    model, tok, _ = modelload.load_model_and_tokenizer(args.base)

    # Reject examples whose prompt does not leave room for the answer.
    for r in rows:
        n = len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        if n >= args.max_seq_len - 1:
            raise DataError(
                f"{args.data}:{r['_line']}: messages: the prompt has {n} tokens, which leaves no room for the "
                f"answer within --max-seq-len {args.max_seq_len}; shorten it or raise --max-seq-len"
            )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])

    set_seed(args.seed)
    torch.use_deterministic_algorithms(False)
    cfg = SFTConfig(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps else -1,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        seed=args.seed,
        data_seed=args.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        max_length=args.max_seq_len,
        packing=False,
        completion_only_loss=True,
    )
    peft_cfg = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=LORA_TARGETS,
    )

    t_start = time.time()

    class Events(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                emit("progress", step=state.global_step, total_steps=state.max_steps,
                     loss=float(logs["loss"]), epoch=float(logs.get("epoch", state.epoch or 0.0)))

        def on_save(self, a, state, control, **kw):
            ckpt = out / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                _atomic_write_json(ckpt / MARKER, {
                    "step": state.global_step,
                    "train_seconds": prev_seconds + (time.time() - t_start),
                })
                if checkpoint_complete(ckpt):
                    emit("checkpoint", step=state.global_step, path=str(ckpt))

    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_cfg,
        callbacks=[Events()],
    )
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    steps = int(trainer.state.global_step)
    train_seconds = round(prev_seconds + (time.time() - t_start), 3)

    tmp = Path(tempfile.mkdtemp(prefix=".adapter.tmp-", dir=out))
    try:
        trainer.model.save_pretrained(str(tmp))
        (tmp / ADAPTER_INFO).write_text(json.dumps({
            "steps": steps,
            "train_seconds": train_seconds,
            "base": args.base,
            "data_sha256": data_sha,
            "examples": len(rows),
            "epochs": args.epochs,
            "lr": args.lr,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "seed": args.seed,
            "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        }, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, adapter_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    emit("done", adapter=str(adapter_dir), steps=steps, train_seconds=train_seconds)
    return 0
