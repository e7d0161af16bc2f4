"""stdout carries only JSON events, one per line.

`claim_stdout()` duplicates the real stdout file descriptor for events and points fd 1
(and sys.stdout) at stderr, so prints from libraries, C extensions or tqdm can never
corrupt the event stream.

Under torchrun every rank inherits the same stdout; rank 0 alone speaks there. Once the ranks
can fail on their own (`all_ranks_report_errors()`, after the checks every rank makes alike),
another rank writes one thing only: the error event of its own failure, its message prefixed with
its rank (one short `write`, so lines of two ranks never interleave), so that a non-retryable
failure of rank 1 (out of memory on its GPU) reaches the activity even though torchrun then stops
rank 0.

Errors are classified once: a `FatalError` (bad data, arguments, model or device) is reported as
`{"event":"error","retryable":false}`; anything unexpected is worth a retry.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading


class FatalError(ValueError):
    """Bad input or configuration: retrying the same command cannot succeed (not retryable)."""


_lock = threading.RLock()  # re-entrant: a signal handler may emit while the main thread is emitting
_out = None
_rank = int(os.environ.get("RANK", "0") or 0)
_others_speak = False
# a line longer than the pipe's atomic write size (4096 on Linux) could interleave with another rank's
MAX_MESSAGE = 3000


def claim_stdout() -> None:
    global _out
    if _out is not None:
        return
    sys.stdout.flush()
    fd = os.dup(1)
    _out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def all_ranks_report_errors() -> None:
    """From now on a failure may be this rank's alone: ranks other than 0 report their errors too."""
    global _others_speak
    _others_speak = True


def emit(event: str, **fields) -> None:
    if _rank != 0:
        if event != "error" or not _others_speak:
            return
        fields["message"] = f"rank {_rank}: {fields.get('message', '')}"
    if isinstance(fields.get("message"), str) and len(fields["message"]) > MAX_MESSAGE:
        fields["message"] = fields["message"][:MAX_MESSAGE] + " ..."
    obj = {"event": event, **{k: _clean(v) for k, v in fields.items()}}
    line = json.dumps(obj, separators=(",", ":"))
    with _lock:
        out = _out if _out is not None else sys.stdout
        out.write(line + "\n")
        out.flush()
