"""Command line: `python -m slearn_trainer train|serve|info ...` (the trainer contract).

The options of `train` and `serve` come from contract.json (contract.py) and are read as typed
arguments (arguments.py). Usage errors are a non-retryable error event and exit 2; bad data, model,
device or a missing package a non-retryable error event and exit 1; anything unexpected a retryable
one (a peer rank that died, a full disk, a flaky filesystem: a retry resumes from the last checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import arguments, contract, modelload
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


def parse_args(argv: list[str]):
    """The typed arguments of `train` or `serve` (arguments.py), or the namespace of `info`."""
    ns = build_parser().parse_args(argv)
    if ns.cmd not in arguments.COMMANDS:
        return ns
    contract.finish(ns, contract.CONTRACT[ns.cmd])
    return arguments.from_namespace(ns.cmd, ns)


def command_of(args) -> str:
    return (
        "train"
        if isinstance(args, arguments.TrainArguments)
        else "serve"
        if isinstance(args, arguments.ServeArguments)
        else args.cmd
    )


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


def classify(e: BaseException, args) -> tuple[str, bool]:
    """(message, retryable) of a failure that was not a FatalError."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError too
        hint = "lower --batch-size or --max-seq-len"
        if isinstance(args, arguments.TrainArguments) and args.gradient_checkpointing != "on":
            hint += ", or set --gradient-checkpointing on"
        return f"out of memory: {e}; {hint}", False
    if getattr(args, "quantization", "none") != "none" and modelload._is_bnb_failure(e):
        return str(modelload._bnb_error(e)), False  # a broken bitsandbytes install does not heal by retrying
    return f"{type(e).__name__}: {e}", True


def main(argv=None) -> int:
    from_cli = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if from_cli:
        _reexec_with_malloc_tuning(argv)
    if argv[:1] == ["train"]:
        claim_stdout()  # stdout carries only JSON events from here on
    args = parse_args(argv)
    cmd = command_of(args)
    if cmd == "info":
        from .device import info

        print(json.dumps(info()))
        return 0
    modelload.use_offline_for(args.base)
    modelload.quiet_libraries()
    try:
        if cmd == "train":
            from .train import run
        else:
            from .server import run
        return run(args)
    except FatalError as e:
        if cmd == "serve":
            print(f"slearn_trainer serve: {e}", file=sys.stderr)
        emit("error", message=str(e), retryable=False)
        return 1
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  (reported as an event, then exit 1)
        message, retryable = classify(e, args)
        if retryable:
            traceback.print_exc(file=sys.stderr)
        emit("error", message=message, retryable=retryable)
        return 1
