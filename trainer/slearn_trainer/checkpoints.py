"""The output directory of a training: its checkpoints, its adapter and its fingerprint.

    OUT/slearn_run.json      what the run learns from (RUN_CONFIG): a rerun resumes only a run trained the same way
    OUT/checkpoint-N/        HF Trainer checkpoints; complete once slearn-complete.json (MARKER) is in it
    OUT/adapter/             the final adapter, renamed into place when whole

A checkpoint counts only once its marker is written: last, atomically, by rank 0, after every rank
finished writing its files (a barrier), so a process killed mid-save never leaves one that looks
complete; incomplete ones are deleted on start. Checkpoints hold what an exact resume needs (adapter
weights, optimizer, scheduler, trainer state with the step, every rank's RNG state); the data order
is a function of the seed and the step. They resume on any number of processes: the effective batch
is the same whatever the count (distributed.split_batch), so step N has seen the same examples, and
the RNG state of a rank the checkpoint has none for is taken from rank 0's (`share_rng_states`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from . import contract
from .data import DataError

log = logging.getLogger("slearn_trainer.checkpoints")

MARKER = "slearn-complete.json"
ADAPTER_INFO = "slearn_training.json"
RUN_CONFIG = "slearn_run.json"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")  # DDP / one process, FSDP (full state dict)
LEGACY_KEYS = {"lr": "learning_rate"}  # slearn_run.json of older versions


def atomic_write_json(path: Path, obj: dict) -> None:
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
        and any((d / name).is_file() for name in OPTIMIZER_FILES)
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


def prepare_out(out: Path) -> tuple[Path | None, float]:
    """Remove what killed processes left; (newest complete checkpoint, its train seconds). Rank 0 only."""
    for d in out.glob(".adapter.tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
    if (out / "adapter").exists():
        shutil.rmtree(out / "adapter", ignore_errors=True)
    resume, incomplete = scan_checkpoints(out)
    for d in incomplete:
        log.warning("removing incomplete checkpoint %s", d)
        shutil.rmtree(d, ignore_errors=True)
    return resume, train_seconds(resume)


def train_seconds(checkpoint: Path | None) -> float:
    """Training time up to `checkpoint`, as its marker recorded it."""
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((checkpoint / MARKER).read_text()).get("train_seconds", 0.0))
    except (ValueError, OSError):
        return 0.0


def mark_complete(checkpoint: Path, *, step: int, train_seconds: float) -> bool:
    """Write the marker of a checkpoint every rank finished writing; whether it is now complete."""
    if not checkpoint.is_dir():
        return False
    atomic_write_json(checkpoint / MARKER, {"step": step, "train_seconds": train_seconds})
    return checkpoint_complete(checkpoint)


def share_rng_states(checkpoint: Path, world_size: int) -> None:
    """Give every rank of a `world_size` group an RNG state in `checkpoint`: a checkpoint written by
    another number of processes has none for some ranks (the Trainer would then skip restoring it);
    they take rank 0's (or the single process's). Rank 0 only, before the group resumes."""
    names = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{i}.pth" for i in range(world_size)]
    source = next((checkpoint / n for n in ("rng_state_0.pth", "rng_state.pth") if (checkpoint / n).is_file()), None)
    if source is None:
        return
    for name in names:
        if not (checkpoint / name).exists():
            shutil.copyfile(source, checkpoint / name)


def save_adapter(save, adapter_dir: Path, info: dict) -> None:
    """`save(tmp_dir)` writes the adapter; then its info, fsync, and one rename into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.tmp-", dir=adapter_dir.parent))
    try:
        save(str(tmp))
        (tmp / ADAPTER_INFO).write_text(json.dumps(info, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, adapter_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_run_config(out: Path, cfg: dict) -> None:
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
                "chat_template_sha256": "--chat-template (its contents)",
            }
            changed = ", ".join(flags.get(k, k) for k in diff)
            raise DataError(
                f"--out {out} holds a training run with different settings ({changed}); "
                "use a new output directory or delete the old one"
            )
    atomic_write_json(path, cfg)
