"""Command line: `python -m slearn_trainer train|serve|info ...` (the trainer contract).

The options of `train` and `serve` come from contract.json (see contract.py). Usage errors are
a non-retryable error event and exit 2; bad data, model or device a non-retryable error event
and exit 1; anything unexpected a retryable one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import contract, modelload
from .events import FatalError, claim_stdout, emit


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a non-retryable error event (exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        emit("error", message=f"{self.prog}: {message}", retryable=False)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="slearn_trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="LoRA fine-tune on OpenAI chat JSONL; resumable")
    contract.add_arguments(t, contract.CONTRACT["train"])
    s = sub.add_parser("serve", help="OpenAI-compatible chat server with LoRA adapters")
    contract.add_arguments(s, contract.CONTRACT["serve"])
    sub.add_parser("info", help="the device, precision and GPUs `auto` would use here, as one JSON object")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.cmd in ("train", "serve"):
        contract.finish(args, contract.CONTRACT[args.cmd])
    return args


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
    args = parse_args(argv)
    if args.cmd == "info":
        from .device import info

        print(json.dumps(info()))
        return 0
    modelload.use_offline_for(args.base)
    modelload.quiet_libraries()
    try:
        if args.cmd == "train":
            from .train import run
        else:
            from .serve import run
        return run(args)
    except FatalError as e:
        if args.cmd == "serve":
            print(f"slearn_trainer serve: {e}", file=sys.stderr)
        emit("error", message=str(e), retryable=False)
        return 1
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  (reported as an event, then exit 1)
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError too
            emit("error", message=f"out of memory: {e}; lower --batch-size or --max-seq-len", retryable=False)
            return 1
        # unexpected: worth a retry
        traceback.print_exc(file=sys.stderr)
        emit("error", message=f"{type(e).__name__}: {e}", retryable=True)
        return 1
