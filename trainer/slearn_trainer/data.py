"""The training data: OpenAI chat JSON Lines, validated line by line, and the order it is trained in.

Every example becomes `{"prompt": [messages...], "completion": [the last assistant message]}` (TRL's
prompt-completion form, so the loss is on the answer only). A `--late-data` run lays every epoch out
in one seeded pass (`late_order`) and trains it in that order: under torchrun each rank still takes
its own share of that one sequence (every N-th micro-batch), so the order is the same whatever the
process count, and a resumed run skips exactly what it already saw.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

from .events import FatalError

ROLES = {"system", "user", "assistant"}
MAX_ERRORS = 20


class DataError(FatalError):
    """Bad training data or arguments: not retryable."""


def _example(obj, where: str) -> tuple[dict | None, str | None]:
    """(the example of one parsed line, or the problem with it)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return None, f'{where}: messages: expected an object {{"messages": [...]}}'
    clean = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return None, f"{where}: messages[{i}].role: must be one of system, user, assistant"
        if not isinstance(m.get("content"), str):
            return None, f"{where}: messages[{i}].content: must be a string"
        clean.append({"role": m["role"], "content": m["content"]})
    if len(clean) < 2 or clean[-1]["role"] != "assistant":
        return None, f"{where}: messages: must end with an assistant message after at least one user message"
    if not any(m["role"] == "user" for m in clean[:-1]):
        return None, f"{where}: messages: needs a user message before the final assistant message"
    if not clean[-1]["content"].strip():
        return None, f"{where}: messages[{len(clean) - 1}].content: the assistant answer is empty"
    return {"prompt": clean[:-1], "completion": [clean[-1]]}, None


def read_chat_jsonl(path: str) -> list[dict]:
    """Validate OpenAI chat JSONL; return [{"prompt": [...], "completion": [last assistant msg], "_line": n}]."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--data {path}: file not found")
    errors: list[str] = []
    rows: list[dict] = []
    with open(p, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: not valid JSON ({e.msg})")
                continue
            example, problem = _example(obj, where)
            if problem:
                errors.append(problem)
            else:
                rows.append({**example, "_line": no})
            if len(errors) >= MAX_ERRORS:
                break
    if errors:
        more = "" if len(errors) < MAX_ERRORS else f" (stopped after {MAX_ERRORS} errors)"
        raise DataError("invalid training data: " + "; ".join(errors) + more)
    if not rows:
        raise DataError(f"--data {path}: no training examples (empty file)")
    return rows


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def late_order(rows: list[dict], late: list[dict], epochs: float, seed: int) -> list[dict]:
    """Every epoch of `rows` laid out in one sequence (each epoch shuffled with `seed`), with the
    `late` rows put at random places in its second half: trained once, in the later part of
    training only (KnownPatch). Trained as one epoch in this order, so a resumed run skips exactly
    what it already saw."""
    rng = random.Random(seed)
    order: list[dict] = []
    for _ in range(math.ceil(epochs)):
        epoch = rows[:]
        rng.shuffle(epoch)
        order += epoch
    order = order[: max(1, round(epochs * len(rows)))]
    half = len(order) // 2
    for r in late:
        order.insert(rng.randint(half, len(order)), r)
    return order


def check_prompt_lengths(rows: list[dict], tok, *, max_seq_len: int, path: str) -> None:
    """Reject examples whose prompt does not leave room for the answer."""
    for r in rows:
        ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
        n = len(ids["input_ids"])
        if n >= max_seq_len - 1:
            raise DataError(
                f"{path}:{r['_line']}: messages: the prompt has {n} tokens, which leaves no room for the "
                f"answer within --max-seq-len {max_seq_len}; shorten it or raise --max-seq-len"
            )
