"""Command line: `python -m slearn_trainer train|serve ...` (the trainer contract)."""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from . import modelload  # noqa: F401  (offline env vars before any HF import)
from .events import claim_stdout, emit


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a non-retryable error event (exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        emit("error", message=f"{self.prog}: {message}", retryable=False)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="slearn_trainer", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="LoRA fine-tune on OpenAI chat JSONL; resumable")
    t.add_argument("--base", required=True, help="smollm2-135m-instruct|embedded, a .gguf file or a local HF model dir")
    t.add_argument("--data", required=True, help='training set, OpenAI chat JSONL ({"messages": [...]})')
    t.add_argument("--out", required=True, help="output dir: checkpoint-N/ and adapter/")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--lora-r", type=int, default=16)
    t.add_argument("--lora-alpha", type=int, default=32)
    t.add_argument("--save-steps", type=int, default=20)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: run all epochs)")
    t.add_argument("--max-seq-len", type=int, default=512)

    s = sub.add_parser("serve", help="OpenAI-compatible chat server with LoRA adapters")
    s.add_argument("--base", required=True)
    s.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    s.add_argument("--served-name", default=modelload.DEFAULT_SERVED_NAME)
    s.add_argument("--max-batch", type=int, default=8, help="max requests per batched generate")
    s.add_argument("--batch-window-ms", type=float, default=5.0, help="how long to gather a batch")
    return p


# glibc otherwise hands freed tensor memory back to the OS and re-faults it on the next
# step; on small VMs that showed up as random 8-18 s stalls per training step (1.3 s/step
# with these settings). glibc reads them only at process start, hence the re-exec (same PID).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "536870912",
}


def _reexec_with_malloc_tuning(argv) -> None:
    if os.environ.get("SLEARN_NO_MALLOC_TUNING") or all(k in os.environ for k in MALLOC_ENV):
        return
    if not sys.platform.startswith("linux"):
        return
    for k, v in MALLOC_ENV.items():
        os.environ.setdefault(k, v)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "slearn_trainer", *argv])


def main(argv=None) -> int:
    from_cli = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if from_cli:
        _reexec_with_malloc_tuning(argv)
    if argv[:1] == ["train"]:
        claim_stdout()  # stdout carries only JSON events from here on
    args = build_parser().parse_args(argv)
    modelload.quiet_libraries()
    if args.cmd == "train":
        from .train import DataError, run

        try:
            return run(args)
        except (DataError, modelload.ModelSpecError) as e:
            emit("error", message=str(e), retryable=False)
            return 1
        except MemoryError as e:
            emit("error", message=f"out of memory: {e}; lower --batch-size or --max-seq-len", retryable=False)
            return 1
        except SystemExit:
            raise
        except BaseException as e:  # unexpected: worth a retry
            traceback.print_exc(file=sys.stderr)
            emit("error", message=f"{type(e).__name__}: {e}", retryable=True)
            return 1
    if args.cmd == "serve":
        from .serve import run as serve_run

        try:
            return serve_run(args)
        except modelload.ModelSpecError as e:
            print(f"slearn_trainer serve: {e}", file=sys.stderr)
            return 2
    return 2
