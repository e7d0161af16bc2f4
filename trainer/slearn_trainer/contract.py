"""The trainer contract, read from `contract.json` (generated from `src/schemas/trainer.ts`).

The argument parsers of `train` and `serve` are built from its JSON Schemas: each property names
its flag, description, default, type, enum and bounds, so the two languages cannot drift. A
property `learningRate` with flag `--lr` becomes the attribute `args.learning_rate`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from importlib import resources

CONTRACT: dict = json.loads(resources.files(__package__).joinpath("contract.json").read_text(encoding="utf-8"))
LIMITS: dict = CONTRACT["limits"]


def dest(key: str) -> str:
    """The Python attribute of a contract key: learningRate -> learning_rate."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _checked(prop: dict):
    """argparse `type=` for a string/integer/number property, enforcing its bounds and pattern."""
    kind = prop.get("type", "string")

    def convert(text: str):
        if kind == "integer":
            try:
                v = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer (got {text!r})") from None
        elif kind == "number":
            try:
                v = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number (got {text!r})") from None
            if not math.isfinite(v):
                raise argparse.ArgumentTypeError(f"expected a finite number (got {text!r})")
        else:
            v = text
            if len(v) < prop.get("minLength", 0):
                raise argparse.ArgumentTypeError("must not be empty")
            if "pattern" in prop and not re.search(prop["pattern"], v):
                raise argparse.ArgumentTypeError(f"{text!r} does not match {prop['pattern']}")
            return v
        for bound, ok, word in (
            ("minimum", lambda b: v >= b, ">="),
            ("exclusiveMinimum", lambda b: v > b, ">"),
            ("maximum", lambda b: v <= b, "<="),
            ("exclusiveMaximum", lambda b: v < b, "<"),
        ):
            if bound in prop and not ok(prop[bound]):
                raise argparse.ArgumentTypeError(f"must be {word} {prop[bound]:g} (got {text})")
        return v

    convert.__name__ = kind  # argparse names the type in its own messages
    return convert


def add_arguments(parser: argparse.ArgumentParser, schema: dict) -> None:
    """One argparse option per property of a contract argument schema."""
    required = set(schema.get("required", ()))
    for key, prop in schema["properties"].items():
        kw: dict = {"dest": dest(key), "help": prop.get("description", "").replace("%", "%%")}
        kind = prop.get("type")
        if kind == "boolean":
            kw.update(action="store_true", default=prop.get("default", False))
        elif kind == "array":
            # append to None, not to the shared default list; `finish()` puts the default back
            kw.update(action="append", type=_checked(prop["items"]), default=None, metavar="VALUE")
        else:
            kw["type"] = _checked(prop)
            if "enum" in prop:
                kw["choices"] = prop["enum"]
            if key in required:
                kw["required"] = True
            else:
                kw["default"] = prop.get("default")
                if kw["default"] is not None:
                    kw["help"] += " (default: %(default)s)"
        parser.add_argument(prop["flag"], **kw)


def finish(args: argparse.Namespace, schema: dict) -> argparse.Namespace:
    """Defaults of repeatable (array) options, which argparse must start from None."""
    for key, prop in schema["properties"].items():
        if prop.get("type") == "array" and getattr(args, dest(key)) is None:
            setattr(args, dest(key), list(prop.get("default", [])))
    return args
