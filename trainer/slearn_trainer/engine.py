"""The model thread of `serve`: one thread owns the model; everything else queues jobs for it.

The thread takes the next job and, for greedy (temperature 0) requests without response_format,
waits up to --batch-window-ms for more greedy requests with the same (adapter, max_tokens) and
runs them as one left-padded `generate` (at most --max-batch prompts). Sampling requests
(temperature > 0) run alone so that `seed` makes them reproducible. Adapter load/unload run on
the same thread, between batches, and a generation resolves its adapter there: a request for an
adapter unloaded while it waited fails (404) instead of running on the base model. Requests for
the base model run with adapters disabled.

At most --max-queue generations wait; one more is refused with 429 and a Retry-After estimated
from the recent service time. A job cancelled before the thread reaches it (its client left) is
dropped, not generated.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
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
        if self.kind != "gen" or r.temperature > 0 or r.rf_kind != "text":
            return None
        return (self.adapter, r.max_tokens)


class Engine:
    def __init__(
        self,
        model,
        tok,
        served_name: str,
        # No defaults: `serve` passes the contract's (--max-batch, --batch-window-ms), the one place they are set.
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
        self.eos_ids = sorted(
            {i for i in [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")] if isinstance(i, int) and i >= 0}
        )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        self.max_ctx = int(getattr(model.config, "max_position_embeddings", 8192))
        self._vocab = None
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
        """`first` and, within the batch window, queued greedy jobs with the same batch key."""
        batch, key = [first], first.batch_key
        if key is None:
            return batch
        deadline, skipped = time.monotonic() + self.window, 0
        while len(batch) < self.max_batch:
            nxt = self._take(max(0.0, deadline - time.monotonic()), skip=skipped)
            if nxt is None:
                break
            if nxt.batch_key == key:
                batch.append(nxt)
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

    def _generate(self, prompts, max_new, sample, temperature, top_p, num_return):
        """Left-padded batched generate. Returns per prompt a list of (token_ids, finish_reason)."""
        import torch

        width = max(len(p) for p in prompts)
        inp = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        kw = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if sample
            else {"do_sample": False}
        )
        out = self.model.generate(
            input_ids=inp,
            attention_mask=att,
            max_new_tokens=max_new,
            num_return_sequences=num_return,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            **kw,
        )
        res = []
        for i in range(len(prompts)):
            choices = []
            for k in range(num_return):
                seq = out[i * num_return + k, width:].tolist()
                finish = "length"
                for pos, t in enumerate(seq):
                    if t in self.eos_ids:
                        seq, finish = seq[:pos], "stop"
                        break
                choices.append((seq, finish))
            res.append(choices)
        return res

    def _finish_text(self, ids, finish, stop):
        text = self.tok.decode(ids, skip_special_tokens=True)
        for s in stop:
            k = text.find(s)
            if k >= 0:
                text, finish = text[:k], "stop"
        return text, finish

    def _run_gen(self, batch: list[Job]):
        import torch

        r0 = batch[0].req
        with self._with_adapter(batch[0].adapter):
            if len(batch) > 1 or (r0.temperature == 0 and r0.rf_kind == "text"):
                # greedy group: one generate, replicate for n > 1 (greedy choices are identical)
                gens = self._generate([j.prompt_ids for j in batch], r0.max_tokens, False, 1.0, 1.0, 1)
                out = []
                for j, g in zip(batch, gens, strict=True):
                    ids, finish = g[0]
                    text, finish = self._finish_text(ids, finish, j.req.stop)
                    out.append(([(text, finish, len(ids))] * j.req.n, len(j.prompt_ids)))
                return out
            j = batch[0]
            r = j.req
            seed = r.seed if r.seed is not None else random.randrange(2**31)
            torch.manual_seed(seed)
            rng = random.Random(seed)
            props = structured.flat_properties(r.schema) if r.rf_kind == "json_schema" else None
            if props:
                if self._vocab is None:
                    self._vocab = structured.VocabSets(self.tok)
                sg = structured.StructuredGenerator(lambda: self.model, self.tok, self._vocab)
                choices = []
                for _ in range(r.n):
                    text = sg.build(j.prompt_ids, props, r.temperature, r.top_p, rng)
                    choices.append((text, "stop", len(self.tok.encode(text, add_special_tokens=False))))
                return [(choices, len(j.prompt_ids))]
            if r.temperature > 0:
                gens = self._generate([j.prompt_ids], r.max_tokens, True, r.temperature, r.top_p, r.n)[0]
            else:
                gens = self._generate([j.prompt_ids], r.max_tokens, False, 1.0, 1.0, 1)[0] * r.n
            choices = []
            for ids, finish in gens:
                text, finish = self._finish_text(ids, finish, r.stop)
                if r.rf_kind != "text":
                    text = structured.extract_json(text)
                choices.append((text, finish, len(ids)))
            return [(choices, len(j.prompt_ids))]

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
