"""Trainer callbacks: what the contract's events say, and when the trainer logs and saves.

Both are HF `TrainerCallback`s (as TRL's callbacks are): `TrainingEvents` turns the Trainer's
begin / log / save into the contract's `start`, `progress` and `checkpoint` events and writes each
checkpoint's completion marker; `Intervals` makes the Trainer log and save by the clock as well as
by steps (a multi-hour GPU run saves every N minutes whatever the model size, and reports progress
every few seconds instead of every step).

Under torchrun every rank runs both: logging and saving are collective (the loss is gathered, FSDP
gathers the weights), so every rank must decide the same thing at the same step; rank 0's clock
decides and the others follow (`distributed.agree`). Rank 0 alone prints and writes markers.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from . import checkpoints, distributed
from .events import emit


class TrainingEvents(TrainerCallback):
    """The contract's `start`, `progress` and `checkpoint` events, and the completion marker of each
    checkpoint.

    Args:
        out: the output directory (checkpoints are `out/checkpoint-N`).
        start_fields: what the `start` event says besides the steps (device, precision, processes,
            how the batch is split, kernels, GPUs).
        previous_seconds: training time before this process (from the checkpoint it resumes).
        epoch_scale: a `--late-data` run trains its laid-out sequence as one epoch; its progress
            events still count the epochs the user asked for.
        is_main: whether this process speaks (rank 0).
    """

    def __init__(
        self,
        out: Path,
        *,
        start_fields: dict,
        previous_seconds: float = 0.0,
        epoch_scale: float = 1.0,
        is_main: bool = True,
    ):
        self.out = out
        self.start_fields = start_fields
        self.previous_seconds = previous_seconds
        self.epoch_scale = epoch_scale
        self.is_main = is_main
        self.started = time.time()
        self.tokens_at_start = 0

    def train_seconds(self) -> float:
        """Training time of the whole run so far (earlier processes included)."""
        return self.previous_seconds + (time.time() - self.started)

    def tokens(self, state) -> int:
        """Tokens trained on by this process group since it started (not before a resume)."""
        return int(state.num_input_tokens_seen - self.tokens_at_start)

    def tokens_per_second(self, state) -> float:
        return round(self.tokens(state) / max(time.time() - self.started, 1e-9), 1)

    def on_train_begin(self, args, state, control, **kwargs):
        self.tokens_at_start, self.started = state.num_input_tokens_seen, time.time()
        if self.is_main:
            emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step, **self.start_fields)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.is_main and logs and "loss" in logs:
            emit(
                "progress",
                step=state.global_step,
                total_steps=state.max_steps,
                loss=float(logs["loss"]),
                epoch=float(logs.get("epoch", state.epoch or 0.0)) * self.epoch_scale,
                tokens=self.tokens(state),
            )

    def on_save(self, args, state, control, **kwargs):
        distributed.barrier()  # every rank has written its files (its RNG state) before the marker
        if not self.is_main:
            return
        ckpt = self.out / f"checkpoint-{state.global_step}"
        if checkpoints.mark_complete(ckpt, step=state.global_step, train_seconds=self.train_seconds()):
            emit("checkpoint", step=state.global_step, path=str(ckpt))


class Intervals(TrainerCallback):
    """Log and save by the clock as well as by steps, the same decision on every rank.

    Args:
        save_steps: save every this many optimiser steps (0: not by steps).
        save_seconds: save when this much training time passed since the last save (0: not by time).
        log_seconds: log when this much time passed since the last log (0: every step).
        device: where the decision is broadcast from rank 0 (the process group's device).
    """

    def __init__(self, *, save_steps: int, save_seconds: float, log_seconds: float, device):
        self.save_steps = save_steps
        self.save_seconds = save_seconds
        self.log_seconds = log_seconds
        self.device = device
        self.last_save = self.last_log = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = self.last_log = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        last = state.global_step >= state.max_steps
        log = self.log_seconds == 0 or last or now - self.last_log >= self.log_seconds
        save = bool(self.save_steps) and state.global_step % self.save_steps == 0
        save = save or (self.save_seconds > 0 and now - self.last_save >= self.save_seconds)
        if self.log_seconds or self.save_seconds:  # a clock decides: rank 0's
            log, save = distributed.agree([log, save], self.device)
        if log:
            control.should_log, self.last_log = True, now
        if save:
            control.should_save, self.last_save = True, now
        return control
