"""stdout carries only JSON events, one per line.

`claim_stdout()` duplicates the real stdout file descriptor for events and points fd 1
(and sys.stdout) at stderr, so prints from libraries, C extensions or tqdm can never
corrupt the event stream.

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


def emit(event: str, **fields) -> None:
    obj = {"event": event, **{k: _clean(v) for k, v in fields.items()}}
    line = json.dumps(obj, separators=(",", ":"))
    with _lock:
        out = _out if _out is not None else sys.stdout
        out.write(line + "\n")
        out.flush()
