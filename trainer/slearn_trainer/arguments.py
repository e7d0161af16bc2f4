"""Typed arguments of `train` and `serve`: one frozen dataclass per command, checked against contract.json.

The contract (generated from `src/schemas/trainer.ts`) is what both languages agree on: argparse is
built from it (contract.py), and these classes are what the Python code reads. Each field carries
its flag and the contract's description as metadata (`field.metadata["help"]`, as TRL's `SFTConfig`
documents its fields); at import the module checks that the fields, their types, which are required
and their defaults match the contract, so the two cannot drift: a key added to the zod schema and not
here fails on the first import, in the tests and in any trainer process.

Fields are grouped as the contract's flags are: what to train on and where to write, the optimisation,
the adapter, the run's resources, and how it reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field

from . import contract


def _field(command: str, key: str, **kw):
    """A field for the contract key `key` of `command`, with its flag and description as metadata."""
    prop = contract.CONTRACT[command]["properties"][key]
    return field(metadata={"key": key, "flag": prop["flag"], "help": prop.get("description", "")}, **kw)


_train = functools.partial(_field, "train")
_serve = functools.partial(_field, "serve")


@dataclass(frozen=True)
class TrainArguments:
    """`python -m slearn_trainer train`: LoRA SFT on OpenAI chat JSON Lines, resumable."""

    # -- what to train, on what, where
    base: str = _train("base")
    data: str = _train("data")
    out: str = _train("out")
    init_adapter: str | None = _train("initAdapter", default=None)
    late_data: str | None = _train("lateData", default=None)
    chat_template: str | None = _train("chatTemplate", default=None)
    # -- optimisation
    epochs: float = _train("epochs", default=3)
    learning_rate: float = _train("learningRate", default=2e-4)
    warmup_ratio: float = _train("warmupRatio", default=0)
    batch_size: int = _train("batchSize", default=4)
    gradient_accumulation: int = _train("gradientAccumulation", default=1)
    max_seq_len: int = _train("maxSeqLen", default=512)
    max_steps: int = _train("maxSteps", default=0)
    seed: int = _train("seed", default=42)
    packing: bool = _train("packing", default=False)
    # -- the adapter
    lora_r: int = _train("loraR", default=16)
    lora_alpha: int = _train("loraAlpha", default=32)
    lora_dropout: float = _train("loraDropout", default=0)
    lora_targets: str = _train("loraTargets", default="all-linear")
    quantization: str = _train("quantization", default="none")
    # -- resources: device, precision, processes, memory, kernels
    device: str = _train("device", default="auto")
    precision: str = _train("precision", default="auto")
    distributed: str = _train("distributed", default="ddp")
    gradient_checkpointing: str = _train("gradientCheckpointing", default="auto")
    attention: str = _train("attention", default="auto")
    # -- checkpoints and reporting
    save_steps: int | None = _train("saveSteps", default=None)
    save_minutes: float | None = _train("saveMinutes", default=None)
    log_seconds: float | None = _train("logSeconds", default=None)
    report_to: str = _train("reportTo", default="none")


@dataclass(frozen=True)
class ServeArguments:
    """`python -m slearn_trainer serve`: the OpenAI-compatible model server with LoRA adapters."""

    # -- the model
    base: str = _serve("base")
    served_name: str = _serve("servedName", default="smollm2-135m-instruct")
    adapter: list[str] = _serve("adapter", default_factory=list)  # noqa: RUF009  (a dataclasses.field)
    chat_template: str | None = _serve("chatTemplate", default=None)
    device: str = _serve("device", default="auto")
    precision: str = _serve("precision", default="auto")
    # -- HTTP
    host: str = _serve("host", default="127.0.0.1")
    port: int = _serve("port", default=8000)
    api_key_env: str | None = _serve("apiKeyEnv", default=None)
    adapter_root: str | None = _serve("adapterRoot", default=None)
    # -- batching and limits
    max_batch: int = _serve("maxBatch", default=16)
    batch_window_ms: float = _serve("batchWindowMs", default=5)
    max_adapters: int = _serve("maxAdapters", default=8)
    max_queue: int = _serve("maxQueue", default=64)


COMMANDS = {"train": TrainArguments, "serve": ServeArguments}

_JSON_TYPES = {"string": (str,), "integer": (int,), "number": (float, int), "boolean": (bool,), "array": (list,)}


def _python_types(hint) -> tuple[set, bool]:
    """(the non-None types of a type hint, whether None is allowed)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    members = list(args) if args else [hint]
    optional = type(None) in members
    return {typing.get_origin(m) or m for m in members if m is not type(None)}, optional


def check(cls, command: str) -> None:
    """Raise if `cls` and the contract's `command` schema disagree on a key, type, requirement or default."""
    schema = contract.CONTRACT[command]
    props, required = schema["properties"], set(schema.get("required", ()))
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = []
    if set(fields) != set(props):
        only_contract, only_here = sorted(set(props) - set(fields)), sorted(set(fields) - set(props))
        problems.append(f"keys differ: only in the contract {only_contract}, only here {only_here}")
    for key in set(fields) & set(props):
        f, prop = fields[key], props[key]
        if f.name != contract.dest(key):
            problems.append(f"{key}: field {f.name}, expected {contract.dest(key)}")
        kinds, optional = _python_types(hints[f.name])
        want = set(_JSON_TYPES.get(prop.get("type", "string"), (str,)))
        if not kinds & want:
            problems.append(f"{key}: type {f.type} does not hold the contract's {prop.get('type', 'string')}")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if (key in required) == has_default:
            problems.append(f"{key}: {'required' if key in required else 'optional'} in the contract")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if has_default and default != prop.get("default") and not (default is None and "default" not in prop):
            problems.append(f"{key}: default {default!r}, the contract says {prop.get('default')!r}")
        if default is None and has_default and not optional:
            problems.append(f"{key}: defaults to None but its type does not allow None")
    if problems:
        raise TypeError(f"{cls.__name__} does not match contract.json `{command}`: " + "; ".join(problems))


for _command, _cls in COMMANDS.items():
    check(_cls, _command)


def from_namespace(command: str, ns: argparse.Namespace):
    """The typed arguments of a parsed command line."""
    cls = COMMANDS[command]
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
