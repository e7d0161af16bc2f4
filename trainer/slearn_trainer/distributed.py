"""Several training processes on one host, as torchrun starts them.

torchrun (`python -m torch.distributed.run --standalone --nproc-per-node N -m slearn_trainer train ...`)
starts N copies of the trainer and tells each its place through the environment: RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE. One process per GPU, each on its LOCAL_RANK device. What this module
decides:

- **Who speaks.** Rank 0 alone prints events, writes checkpoint markers and saves the adapter; other
  ranks print only an error event of their own when they fail (events.py), prefixed with their rank.
- **The effective batch.** The config's batch × accumulation is the batch of one optimiser step
  whatever the number of processes: `split_batch` gives each process its share (the accumulation is
  divided first, then the per-device batch), so a run on 1, 2 or 8 GPUs takes the same steps on the
  same examples (accelerate hands each rank every N-th micro-batch of the one seeded order).
- **Living and dying together.** torchrun starts each rank in a session of its own, so signals to the
  launcher's process group do not reach them; each rank asks the kernel to kill it when the launcher
  dies (PR_SET_PDEATHSIG), so cancelling or killing the launcher stops every rank. A rank that dies
  makes torchrun stop the others and exit non-zero: the attempt fails and its retry resumes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass

from .events import FatalError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group (1 process, rank 0, without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks(env=None) -> Ranks:
    """Where this process sits, from torchrun's variables."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    return Ranks(
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=world,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
    )


def split_batch(batch_size: int, accumulation: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation) for `processes` so that per-device × accumulation × processes
    equals `batch_size × accumulation`. The accumulation is divided first (the per-device batch, the
    memory each GPU needs, stays what the config says); what it cannot absorb comes off the batch.
    Refused (non-retryable) when the effective batch is not a multiple of the process count."""
    effective = batch_size * accumulation
    if processes <= 1:
        return batch_size, accumulation
    if effective % processes:
        raise FatalError(
            f"{processes} training processes cannot share an effective batch of {effective} "
            f"(--batch-size {batch_size} × --grad-accum {accumulation}) equally: make it a multiple of "
            f"{processes}, or set train.processes to a divisor of it"
        )
    per_process = effective // processes
    device_batch = max(d for d in range(1, min(batch_size, per_process) + 1) if per_process % d == 0)
    return device_batch, per_process // device_batch


_PR_SET_PDEATHSIG = 1


def die_with_launcher(sig: int = signal.SIGKILL) -> None:
    """Under torchrun: ask the kernel to send `sig` to this rank when its launcher exits. A launcher
    killed outright (SIGKILL after the grace period of a cancellation) cannot pass the signal on
    itself, and the rank, in a session of its own, would train on as an orphan. Linux only; a no-op
    elsewhere or without torchrun."""
    if not os.environ.get("TORCHELASTIC_RUN_ID") or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the launcher died before the request took effect
        os.kill(os.getpid(), sig)


def init_process_group(device: str, local_rank: int) -> None:
    """Join the group before anything collective (accelerate reuses it): NCCL on CUDA, bound to this
    rank's GPU; gloo on CPU."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group(backend="gloo")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def agree(flags: list[bool], device) -> list[bool]:
    """Rank 0's flags on every rank (a broadcast): decisions taken on a clock, such as "log now" or
    "save now", must be the same on every rank, since logging and saving are collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flags
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return [bool(x) for x in t.tolist()]


def destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
