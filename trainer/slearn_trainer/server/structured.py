"""`response_format` support.

For a flat object schema whose properties are boolean / number / integer / string (or an
`enum` of literals), the JSON text is *built* by the server and only the values are chosen
by the model, one field at a time, in schema property order:

- boolean / enum: each literal is scored by its log-likelihood after `"key":`; the best one
  is taken (sampled from the softmax of the scores when temperature > 0);
- number / integer: decoding restricted to digit tokens (plus `-` and `.` for numbers)
  until `,` / `}` / end of turn, then clamped to `minimum`/`maximum` if the schema has them;
- string: free decoding after `"key": "` until the model closes the quote (at most
  MAX_STRING_TOKENS tokens); the value is re-escaped with json.dumps.

So the output always parses and validates against such a schema. Any other schema (nested
objects, arrays, ...) and `json_object` fall back to an instruction in the system prompt and
unconstrained decoding, after which the first {...} block that parses is returned if there is one.
"""

from __future__ import annotations

import json
import math
import re

MAX_STRING_TOKENS = 64
MAX_NUMBER_TOKENS = 12
SIMPLE_TYPES = {"boolean", "number", "integer", "string"}


def schema_from_response_format(rf) -> tuple[str, dict | None]:
    """('text'|'json_object'|'json_schema', schema or None). Raises ValueError on bad input."""
    if rf is None:
        return "text", None
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise ValueError("response_format must be an object with a string 'type'")
    t = rf["type"]
    if t == "text":
        return "text", None
    if t == "json_object":
        return "json_object", None
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise ValueError("response_format.json_schema must be an object with a 'schema'")
        schema = js.get("schema", {})
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be an object")
        return "json_schema", schema
    raise ValueError(f"response_format.type must be text, json_object or json_schema (got {t!r})")


def _prop_kind(ps: dict) -> str | None:
    if not isinstance(ps, dict):
        return None
    if (
        isinstance(ps.get("enum"), list)
        and ps["enum"]
        and all(isinstance(v, (str, int, float, bool)) or v is None for v in ps["enum"])
    ):
        return "enum"
    if "const" in ps:
        return "const"
    t = ps.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t if t in SIMPLE_TYPES else None


def flat_properties(schema: dict | None) -> list[tuple[str, dict, str]] | None:
    """[(name, prop_schema, kind)] when the schema is a flat object we can build; else None."""
    if not schema or not isinstance(schema.get("properties"), dict):
        return None
    if schema.get("type", "object") != "object" or not schema["properties"]:
        return None
    out = []
    for name, ps in schema["properties"].items():
        kind = _prop_kind(ps)
        if kind is None:
            return None
        out.append((name, ps, kind))
    return out


def instruction(kind: str, schema: dict | None) -> str:
    if kind == "json_schema" and schema:
        return "Reply with a single JSON object and nothing else. It must match this JSON schema:\n" + json.dumps(
            schema, separators=(",", ":")
        )
    return "Reply with a single JSON object and nothing else."


def extract_json(text: str) -> str:
    """The first balanced {...} block of text that parses as JSON, else text unchanged."""
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        depth = 0
        in_str = esc = False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    cand = text[start : i + 1]
                    try:
                        json.loads(cand)
                        return cand
                    except ValueError:
                        break
    return text


class VocabSets:
    """Token-id sets used for number decoding, computed once per tokenizer."""

    def __init__(self, tok):
        self.num_first_int, self.num_first, self.num_rest_int, self.num_rest = [], [], [], []
        self.term = set()
        for tid in range(len(tok)):
            s = tok.decode([tid])
            if re.fullmatch(r" ?-?[0-9]+", s) or s in ("-", " -"):
                self.num_first_int.append(tid)
            if re.fullmatch(r" ?-?[0-9]*\.?[0-9]*", s) and re.search(r"[0-9.\-]", s):
                self.num_first.append(tid)
            if re.fullmatch(r"[0-9]+", s):
                self.num_rest_int.append(tid)
            if re.fullmatch(r"[0-9]*\.?[0-9]*", s) and s:
                self.num_rest.append(tid)
            if s.strip() in (",", "}", "},") or (s and not s.strip() and "\n" in s):
                self.term.add(tid)
        if tok.eos_token_id is not None:
            self.term.add(tok.eos_token_id)


class StructuredGenerator:
    """Builds a JSON object field by field with a causal LM (called inside the model thread)."""

    def __init__(self, model_fn, tok, vocab: VocabSets):
        # model_fn() returns the model (base or PEFT, adapter already selected by the caller)
        self.model_fn = model_fn
        self.tok = tok
        self.v = vocab

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def _score(self, prompt_ids: list[int], prefix: str, candidates: list[str]) -> list[float]:
        """Log-likelihood of each candidate continuation of prompt+prefix (one padded forward)."""
        import torch

        seqs, spans = [], []
        for c in candidates:
            full = self._ids(prefix + c)
            pre = self._ids(prefix)
            k = 0
            while k < len(pre) and k < len(full) and pre[k] == full[k]:
                k += 1
            ids = prompt_ids + full
            seqs.append(ids)
            spans.append((len(prompt_ids) + k, len(ids)))
        L = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        model = self.model_fn()
        inp = torch.tensor([[pad] * (L - len(s)) + s for s in seqs], device=model.device)
        att = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in seqs], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=inp, attention_mask=att).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        scores = []
        for row, (s, (a, b)) in enumerate(zip(seqs, spans, strict=True)):
            off = L - len(s)
            tot = 0.0
            for pos in range(a, b):
                tot += float(logp[row, off + pos - 1, s[pos]])
            scores.append(tot)
        return scores

    def _generate(
        self,
        ids: list[int],
        max_new: int,
        allowed_first=None,
        allowed_rest=None,
        stop_on=None,
        stop_text=None,
        sample=False,
        temperature=1.0,
        top_p=1.0,
    ) -> list[int]:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        start = len(ids)
        tok = self.tok
        model = self.model_fn()

        class Allow(LogitsProcessor):
            def __init__(self):
                self.first = self._ids(allowed_first)
                self.rest = self._ids(allowed_rest)

            @staticmethod
            def _ids(allowed):
                return torch.tensor(sorted(set(allowed) | set(stop_on or ())), device=model.device) if allowed else None

            def __call__(self, input_ids, scores):
                allowed = self.first if input_ids.shape[1] == start else self.rest
                if allowed is None:
                    return scores
                mask = torch.full_like(scores, float("-inf"))
                mask[:, allowed] = 0
                return scores + mask

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                new = input_ids[0, start:].tolist()
                if not new:
                    return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                done = bool(stop_on and new[-1] in stop_on)
                if stop_text and stop_text in tok.decode(new):
                    done = True
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        kw = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sample else {"do_sample": False}
        out = model.generate(
            input_ids=torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=max_new,
            logits_processor=LogitsProcessorList([Allow()]),
            stopping_criteria=StoppingCriteriaList([Stop()]),
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
            **kw,
        )
        return out[0, start:].tolist()

    def _pick(self, scores: list[float], *, sample: bool, temperature: float, gen) -> int:
        if not sample:
            return max(range(len(scores)), key=lambda i: scores[i])
        m = max(scores)
        w = [math.exp((s - m) / max(temperature, 1e-4)) for s in scores]
        r = gen.random() * sum(w)
        for i, x in enumerate(w):
            r -= x
            if r <= 0:
                return i
        return len(w) - 1

    def build(self, prompt_ids: list[int], props, *, temperature: float, top_p: float, rng) -> str:
        sample = temperature > 0
        text = "{"
        for i, (name, ps, kind) in enumerate(props):
            text += ("" if i == 0 else ", ") + json.dumps(name) + ":"
            if kind in ("enum", "boolean", "const"):
                lits = ps["enum"] if kind == "enum" else ([ps["const"]] if kind == "const" else [True, False])
                cands = [" " + json.dumps(x) for x in lits]
                idx = (
                    self._pick(self._score(prompt_ids, text, cands), sample=sample, temperature=temperature, gen=rng)
                    if len(cands) > 1
                    else 0
                )
                text += cands[idx]
            elif kind in ("number", "integer"):
                integer = kind == "integer"
                new = self._generate(
                    prompt_ids + self._ids(text),
                    MAX_NUMBER_TOKENS,
                    allowed_first=self.v.num_first_int if integer else self.v.num_first,
                    allowed_rest=self.v.num_rest_int if integer else self.v.num_rest,
                    stop_on=self.v.term,
                    sample=sample,
                    temperature=temperature or 1.0,
                    top_p=top_p,
                )
                s = self.tok.decode([t for t in new if t not in self.v.term])
                m = re.search(r"-?\d+(\.\d+)?|-?\.\d+", s)
                val = float(m.group(0)) if m else 0.0
                if isinstance(ps.get("minimum"), (int, float)):
                    val = max(val, ps["minimum"])
                if isinstance(ps.get("maximum"), (int, float)):
                    val = min(val, ps["maximum"])
                text += " " + json.dumps(round(val) if integer else (int(val) if val == int(val) else val))
            else:  # string
                pre = text + ' "'
                new = self._generate(
                    prompt_ids + self._ids(pre),
                    MAX_STRING_TOKENS,
                    stop_text='"',
                    stop_on={self.tok.eos_token_id},
                    sample=sample,
                    temperature=temperature or 1.0,
                    top_p=top_p,
                )
                s = self.tok.decode([t for t in new if t != self.tok.eos_token_id])
                s = s.split('"', 1)[0].replace("\\", "").strip()
                text += " " + json.dumps(s, ensure_ascii=False)
        return text + "}"
