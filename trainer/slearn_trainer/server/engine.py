"""The model thread of `serve`: one thread owns the model; everything else queues jobs for it.

The thread takes the next job and, for plain-text requests (greedy or sampled), waits up to
--batch-window-ms for more text requests with the same (adapter, max_tokens) and runs them as one
left-padded `generate` of at most --max-batch rows (a request for n sampled answers is n rows).
This is a batch per window, run to completion: a request that arrives while a batch generates
waits for the next one.

Sampled rows are reproducible whatever else is in the batch: each has a torch.Generator of its
own, seeded from the request's `seed` and the choice's index, and draws Gumbel noise from it at
every step (`RowSampling`): argmax(logits / T + Gumbel) is a draw from softmax(logits / T), so
the batch decodes greedily and each row samples from its own stream. Requests with a JSON schema
run alone. Adapter load/unload run on the same thread, between batches, and a generation resolves
its adapter there: a request for an adapter unloaded while it waited fails (404) instead of
running on the base model. Requests for the base model run with adapters disabled.

At most --max-queue generations wait; one more is refused with 429 and a Retry-After estimated
from the recent service time. A job cancelled before the thread reaches it (its client left) is
dropped, not generated.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import structured
from .api import LIMITS, ApiError, ChatRequest, bad

log = logging.getLogger("slearn_trainer.engine")


@dataclass
class Job:
    kind: str  # "gen" | "control" | "stop"
    future: concurrent.futures.Future
    fn: Any = None
    req: ChatRequest | None = None
    adapter: str | None = None
    prompt_ids: list | None = None

    @property
    def batch_key(self):
        r = self.req
        if self.kind != "gen" or r.rf_kind != "text":
            return None
        return (self.adapter, r.max_tokens)

    @property
    def rows(self) -> int:
        """Rows this job takes in a batch: one greedy row (its n choices are the same), or n samples."""
        r = self.req
        return r.n if r.temperature > 0 else 1


@dataclass(frozen=True)
class Row:
    """One sequence of a batch: its prompt and how its next token is chosen."""

    prompt_ids: list
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


def row_seed(seed: int, choice: int) -> int:
    """The generator seed of choice `choice` of a request with `seed` (decorrelated, 63 bits)."""
    digest = hashlib.sha256(f"{seed}:{choice}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class RowSampling:
    """A logits processor that samples each row from a generator of its own, under greedy decoding.

    For a sampled row it scales the logits by 1/T, removes the tail outside top-p, and adds Gumbel
    noise drawn from the row's generator; `generate` then takes the argmax, which is a draw from
    the row's softmax. Greedy rows are left as they are. A row's draws depend only on its seed and
    the step, never on the other rows of the batch.
    """

    def __init__(self, rows: list[Row], device):
        import torch

        self.rows = rows
        self.generators = []
        for r in rows:
            g = None
            if r.temperature > 0:
                g = torch.Generator(device="cpu")
                g.manual_seed(r.seed)
            self.generators.append(g)
        self.device = device

    def __call__(self, input_ids, scores):
        import torch

        for i, (r, g) in enumerate(zip(self.rows, self.generators, strict=True)):
            if g is None:
                continue
            logits = scores[i].float() / r.temperature
            if r.top_p < 1.0:
                order = torch.argsort(logits, descending=True)
                probs = torch.softmax(logits[order], dim=-1)
                # keep the smallest prefix whose mass reaches top_p (the first token always stays)
                drop = torch.cumsum(probs, dim=-1) - probs >= r.top_p
                logits[order[drop]] = -math.inf
            u = torch.rand(logits.shape, generator=g).clamp_(min=1e-20, max=1.0 - 1e-7)
            gumbel = -torch.log(-torch.log(u)).to(logits.device)
            scores[i] = (logits + gumbel).to(scores.dtype)
        return scores


def stop_token_ids(model, tok) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and every id of the model's generation config
    (Llama 3 lists both <|eot_id|> and <|end_of_text|> there, while its tokenizer's EOS is only one)."""
    ids = {tok.eos_token_id}
    gen = getattr(model, "generation_config", None)
    configured = getattr(gen, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


class Engine:
    """The model thread and its queue (see the module doc). Keyword arguments only, after the model
    and tokenizer: `serve` passes the contract's values (--max-batch, --batch-window-ms, ...), the one
    place they are set."""

    def __init__(
        self,
        model,
        tok,
        *,
        served_name: str,
        max_batch: int,
        window_ms: float,
        max_queue: int = LIMITS["maxQueue"],
        max_adapters: int = LIMITS["maxAdapters"],
    ):
        self.base = model
        self.model = model
        self.tok = tok
        self.served_name = served_name
        self.adapters: dict[str, str] = {}
        self.created = int(time.time())
        self.max_batch = max(1, max_batch)
        self.window = max(0.0, window_ms) / 1000.0
        self.max_queue = max_queue
        self.max_adapters = max_adapters
        self.device = next(model.parameters()).device
        self.q: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.waiting = 0  # generation jobs submitted and not yet taken by the model thread
        self.seconds_per_request: float | None = None  # recent service time (EWMA), for Retry-After
        self.eos_ids = stop_token_ids(model, tok)
        if not self.eos_ids:
            raise ValueError(
                "the model has no end-of-turn token (neither the tokenizer nor the generation config names one)"
            )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        self.max_ctx = int(getattr(model.config, "max_position_embeddings", 8192))
        self._vocab = None
        # what the batching did: batches run, their widest (rows and requests), for /health and tests
        self.stats = {"batches": 0, "rows": 0, "maxRows": 0, "maxRequests": 0}
        self.thread = threading.Thread(target=self._loop, name="model", daemon=True)
        self.thread.start()

    # -- public (any thread)
    def generate(self, req: ChatRequest, adapter: str | None, prompt_ids: list[int]) -> concurrent.futures.Future:
        """Queue a generation, or refuse it (429 + Retry-After) when --max-queue requests already wait."""
        job = Job("gen", concurrent.futures.Future(), req=req, adapter=adapter, prompt_ids=prompt_ids)
        with self.cv:
            if self.waiting >= self.max_queue:
                wait = self.retry_after()
                raise ApiError(
                    429,
                    f"the server is busy: {self.waiting} requests are waiting for the model; retry in {wait} s",
                    "rate_limit_error",
                    "queue_full",
                    headers={"Retry-After": str(wait)},
                )
            self.waiting += 1
            self._put(job)
        return job.future

    def control(self, fn) -> concurrent.futures.Future:
        """Run fn() on the model thread, between batches."""
        job = Job("control", concurrent.futures.Future(), fn=fn)
        with self.cv:
            self._put(job)
        return job.future

    def close(self) -> None:
        with self.cv:
            self._put(Job("stop", concurrent.futures.Future()))
        self.thread.join(timeout=30)

    def retry_after(self) -> int:
        """Seconds until the requests waiting now are likely served, from the recent service rate."""
        per = self.seconds_per_request if self.seconds_per_request is not None else 1.0
        return max(1, math.ceil(self.waiting * per))

    def _put(self, job: Job) -> None:  # with self.cv held
        self.q.append(job)
        self.cv.notify()

    # -- model thread
    def _take(self, timeout: float | None = None, skip: int = 0) -> Job | None:
        """The job at position `skip` of the queue, waiting up to `timeout` (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while len(self.q) <= skip:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cv.wait(left)
            job = self.q[skip]
            del self.q[skip]
            return job

    def _gather(self, first: Job) -> list[Job]:
        """`first` and, within the batch window, queued text jobs with the same batch key, up to
        --max-batch rows (a first job of more rows runs alone)."""
        batch, key = [first], first.batch_key
        if key is None:
            return batch
        rows = first.rows
        deadline, skipped = time.monotonic() + self.window, 0
        while rows < self.max_batch:
            nxt = self._take(max(0.0, deadline - time.monotonic()), skip=skipped)
            if nxt is None:
                break
            if nxt.batch_key == key and rows + nxt.rows <= self.max_batch:
                batch.append(nxt)
                rows += nxt.rows
            else:  # leave it where it was, in order
                with self.cv:
                    self.q.insert(skipped, nxt)
                skipped += 1
        return batch

    def _loop(self):
        import torch

        torch.set_grad_enabled(False)
        while True:
            job = self._take()
            if job.kind == "stop":
                return
            if job.kind == "control":
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.fn())
                    except BaseException as e:  # noqa: BLE001
                        job.future.set_exception(e)
                continue
            batch = self._gather(job)
            with self.cv:
                self.waiting -= len(batch)
            # a job whose client went away before now was cancelled: dropped, not generated
            batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        adapter = batch[0].adapter
        if adapter is not None and adapter not in self.adapters:  # unloaded while the job waited
            err = ApiError(
                404,
                f"The model `{adapter}` does not exist (its adapter was unloaded).",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
            for j in batch:
                j.future.set_exception(err)
            return
        t0 = time.monotonic()
        try:
            results = self._run_gen(batch)
        except BaseException as e:
            log.exception("generation failed")
            for j in batch:
                j.future.set_exception(e)
            return
        per = (time.monotonic() - t0) / len(batch)
        old = self.seconds_per_request
        self.seconds_per_request = per if old is None else 0.8 * old + 0.2 * per
        for j, r in zip(batch, results, strict=True):
            j.future.set_result(r)

    def _with_adapter(self, name):
        """Context manager: select adapter `name`, or disable adapters for the base model."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return contextlib.nullcontext()
        if name is None:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _generate(self, rows: list[Row], *, max_new: int):
        """One left-padded batched generate over `rows`. Returns per row (token_ids, finish_reason)."""
        import torch
        from transformers import LogitsProcessorList

        width = max(len(r.prompt_ids) for r in rows)
        padded = [([self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids, width - len(r.prompt_ids)) for r in rows]
        inp = torch.tensor([ids for ids, _ in padded], device=self.device)
        att = torch.tensor([[0] * pad + [1] * (width - pad) for _, pad in padded], device=self.device)
        sampling = any(r.temperature > 0 for r in rows)
        out = self.model.generate(
            input_ids=inp,
            attention_mask=att,
            max_new_tokens=max_new,
            do_sample=False,  # sampled rows draw in RowSampling; the argmax is their sample
            logits_processor=LogitsProcessorList([RowSampling(rows, self.device)]) if sampling else None,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        res = []
        for i in range(len(rows)):
            seq = out[i, width:].tolist()
            finish = "length"
            for pos, t in enumerate(seq):
                if t in self.eos_ids:
                    seq, finish = seq[:pos], "stop"
                    break
            res.append((seq, finish))
        return res

    def _finish_text(self, ids, finish, *, stop):
        text = self.tok.decode(ids, skip_special_tokens=True)
        for s in stop:
            k = text.find(s)
            if k >= 0:
                text, finish = text[:k], "stop"
        return text, finish

    def _rows(self, job: Job) -> list[Row]:
        r = job.req
        if r.temperature == 0:
            return [Row(job.prompt_ids)]
        seed = r.seed if r.seed is not None else random.randrange(2**31)
        return [Row(job.prompt_ids, r.temperature, r.top_p, row_seed(seed, k)) for k in range(r.n)]

    def _run_gen(self, batch: list[Job]):
        with self._with_adapter(batch[0].adapter):
            if batch[0].req.rf_kind == "text":
                return self._run_text(batch)
            return [self._run_structured(batch[0])]

    def _run_text(self, batch: list[Job]):
        """Greedy and sampled text requests in one generate: one row per greedy request (its n
        choices are identical), one row per sampled choice."""
        per_job = [self._rows(j) for j in batch]
        n_rows = sum(len(r) for r in per_job)
        st = self.stats
        st["batches"] += 1
        st["rows"] += n_rows
        st["maxRows"] = max(st["maxRows"], n_rows)
        st["maxRequests"] = max(st["maxRequests"], len(batch))
        gens = iter(self._generate([row for rows in per_job for row in rows], max_new=batch[0].req.max_tokens))
        out = []
        for j, rows in zip(batch, per_job, strict=True):
            choices = []
            for _ in rows:
                ids, finish = next(gens)
                text, finish = self._finish_text(ids, finish, stop=j.req.stop)
                choices.append((text, finish, len(ids)))
            if j.req.temperature == 0:
                choices = choices * j.req.n
            out.append((choices, len(j.prompt_ids)))
        return out

    def _run_structured(self, j: Job):
        """A request with response_format: a flat object schema decoded under its constraints,
        anything else generated and its JSON extracted."""
        r = j.req
        seed = r.seed if r.seed is not None else random.randrange(2**31)
        props = structured.flat_properties(r.schema) if r.rf_kind == "json_schema" else None
        if props:
            if self._vocab is None:
                self._vocab = structured.VocabSets(self.tok)
            sg = structured.StructuredGenerator(lambda: self.model, self.tok, self._vocab)
            rng = random.Random(seed)
            choices = []
            for _ in range(r.n):
                text = sg.build(j.prompt_ids, props, temperature=r.temperature, top_p=r.top_p, rng=rng)
                choices.append((text, "stop", len(self.tok.encode(text, add_special_tokens=False))))
            return (choices, len(j.prompt_ids))
        rows = self._rows(j)
        choices = []
        for ids, finish in self._generate(rows, max_new=r.max_tokens):
            text, finish = self._finish_text(ids, finish, stop=r.stop)
            choices.append((structured.extract_json(text), finish, len(ids)))
        if r.temperature == 0:
            choices = choices * r.n
        return (choices, len(j.prompt_ids))

    # -- adapters (run on the model thread via control(), so they never race a generation)
    def load_adapter(self, name: str, path: str):
        from peft import PeftModel

        if name == self.served_name or name in self.adapters:
            raise bad(f"The lora adapter '{name}' has already been loaded.", "lora_name")
        if len(self.adapters) >= self.max_adapters:
            raise bad(
                f"{len(self.adapters)} adapters are loaded, the most this server allows (--max-adapters); "
                "unload one first (POST /v1/unload_lora_adapter)",
                "lora_name",
            )
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.base, path, adapter_name=name, is_trainable=False)
        self.model.eval()
        self.adapters[name] = path

    def unload_adapter(self, name: str):
        from peft import PeftModel

        if name not in self.adapters:
            raise ApiError(
                404,
                f"The lora adapter '{name}' cannot be found.",
                "invalid_request_error",
                "adapter_not_found",
                "lora_name",
            )
        if len(self.adapters) == 1 and isinstance(self.model, PeftModel):
            self.base = self.model.unload()  # removes the LoRA layers, back to the plain base model
            self.model = self.base
        else:
            self.model.delete_adapter(name)
        del self.adapters[name]

    # -- prompt (a tokenizer thread, off the event loop)
    def prompt_ids(self, req: ChatRequest) -> list[int]:
        msgs = [m.chat() for m in req.messages]
        if req.rf_kind != "text":
            ins = structured.instruction(req.rf_kind, req.schema)
            if msgs and msgs[0]["role"] == "system":
                msgs = [{"role": "system", "content": msgs[0]["content"] + "\n\n" + ins}, *msgs[1:]]
            else:
                msgs = [{"role": "system", "content": ins}, *msgs]
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = list(ids["input_ids"])
        if len(ids) + req.max_tokens > self.max_ctx:
            raise bad(
                f"the prompt has {len(ids)} tokens; with max_tokens {req.max_tokens} it exceeds the "
                f"context window of {self.max_ctx}",
                "messages",
            )
        return ids
