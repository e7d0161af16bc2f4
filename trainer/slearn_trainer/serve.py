"""`python -m slearn_trainer serve`: OpenAI-compatible chat server with PEFT LoRA adapters.

One model thread owns the model. Requests are put on a queue; the thread takes the next job
and, for greedy (temperature 0) requests without response_format, waits up to
--batch-window-ms for more greedy requests with the same (adapter, max_tokens) and runs
them as one left-padded `generate` (at most --max-batch prompts). Sampling requests
(temperature > 0) run alone so that `seed` makes them reproducible; adapter load/unload run
on the same thread, so they never race a generation. Requests for the base model run with
adapters disabled.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import queue
import random
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request  # module level: FastAPI resolves the (string) annotations here

from . import modelload
from . import structured

log = logging.getLogger("slearn_trainer.serve")

MAX_N = 16
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_CAP = 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code if self.code is not None else self.status}}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


# ---------------------------------------------------------------- request parsing


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_messages(msgs) -> list[dict]:
    if msgs is None:
        raise bad("'messages' is required", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("'messages' must be a non-empty array", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise bad(f"messages[{i}].role must be one of system, developer, user, assistant, tool", f"messages[{i}].role")
        c = m.get("content")
        if c is None and role == "assistant":
            c = ""
        if isinstance(c, list):
            parts = []
            for j, p in enumerate(c):
                if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                    raise bad(f"messages[{i}].content[{j}] must be a text part", f"messages[{i}].content")
                parts.append(p["text"])
            c = "".join(parts)
        if not isinstance(c, str):
            raise bad(f"messages[{i}].content must be a string or an array of text parts", f"messages[{i}].content")
        out.append({"role": {"developer": "system", "tool": "user"}.get(role, role), "content": c})
    return out


@dataclass
class ChatRequest:
    model: str
    messages: list
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    stop: list = field(default_factory=list)
    rf_kind: str = "text"
    schema: dict | None = None


def parse_chat(body, default_model: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    messages = parse_messages(body.get("messages"))
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise bad("'model' must be a non-empty string", "model")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or n < 1 or n > MAX_N:
        raise bad(f"'n' must be an integer between 1 and {MAX_N}", "n")
    temperature = body.get("temperature", 1.0)
    temperature = 1.0 if temperature is None else temperature
    if not _is_num(temperature) or not (0 <= temperature <= 2):
        raise bad("'temperature' must be a number between 0 and 2", "temperature")
    top_p = body.get("top_p", 1.0)
    top_p = 1.0 if top_p is None else top_p
    if not _is_num(top_p) or not (0 < top_p <= 1):
        raise bad("'top_p' must be a number in (0, 1]", "top_p")
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    mt = DEFAULT_MAX_TOKENS if mt is None else mt
    if not _is_int(mt) or mt < 1 or mt > MAX_TOKENS_CAP:
        raise bad(f"'max_tokens' must be an integer between 1 and {MAX_TOKENS_CAP}", "max_tokens")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad("'seed' must be an integer", "seed")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4):
        raise bad("'stop' must be a string or an array of at most 4 strings", "stop")
    stop = [s for s in stop if s]
    if body.get("stream"):
        raise bad("'stream' is not supported by this server", "stream")
    try:
        rf_kind, schema = structured.schema_from_response_format(body.get("response_format"))
    except ValueError as e:
        raise bad(str(e), "response_format") from None
    return ChatRequest(model, messages, n, float(temperature), float(top_p), mt, seed, stop, rf_kind, schema)


# ---------------------------------------------------------------- model thread


@dataclass
class Job:
    kind: str  # "gen" | "control"
    future: concurrent.futures.Future
    fn: object = None
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
    def __init__(self, model, tok, served_name: str, max_batch: int = 8, window_ms: float = 5.0):
        self.base = model
        self.model = model
        self.tok = tok
        self.served_name = served_name
        self.adapters: dict[str, str] = {}
        self.created = int(time.time())
        self.max_batch = max(1, max_batch)
        self.window = max(0.0, window_ms) / 1000.0
        self.q: queue.Queue = queue.Queue()
        self.pending: collections.deque = collections.deque()
        self.eos_ids = sorted({i for i in [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
                               if isinstance(i, int) and i >= 0})
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        self.max_ctx = int(getattr(model.config, "max_position_embeddings", 8192))
        self._vocab = None
        self.stats = collections.Counter()
        self.thread = threading.Thread(target=self._loop, name="model", daemon=True)
        self.thread.start()

    # -- public (any thread)
    def submit(self, job: Job) -> concurrent.futures.Future:
        self.q.put(job)
        return job.future

    def control(self, fn) -> concurrent.futures.Future:
        return self.submit(Job("control", concurrent.futures.Future(), fn=fn))

    # -- model thread
    def _next(self, timeout=None):
        if self.pending:
            return self.pending.popleft()
        return self.q.get(timeout=timeout) if timeout is not None else self.q.get()

    def _loop(self):
        import torch

        torch.set_grad_enabled(False)
        while True:
            job = self._next()
            try:
                if job.kind == "control":
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_result(job.fn())
                    continue
                key = job.batch_key
                batch = [job]
                if key is not None:
                    deadline = time.monotonic() + self.window
                    skipped = []
                    while len(batch) < self.max_batch:
                        if self.pending:
                            nxt = self.pending.popleft()
                        else:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            try:
                                nxt = self.q.get(timeout=left)
                            except queue.Empty:
                                break
                        if nxt.batch_key == key:
                            batch.append(nxt)
                        else:
                            skipped.append(nxt)
                    self.pending.extendleft(reversed(skipped))
                batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
                if not batch:
                    continue
                self.stats["batches"] += 1
                self.stats["requests"] += len(batch)
                self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
                try:
                    results = self._run_gen(batch)
                    for j, r in zip(batch, results):
                        j.future.set_result(r)
                except BaseException as e:  # noqa: BLE001
                    log.exception("generation failed")
                    for j in batch:
                        if not j.future.done():
                            j.future.set_exception(e)
            except BaseException as e:  # noqa: BLE001
                log.exception("model thread job failed")
                if not job.future.done():
                    job.future.set_exception(e)

    def _with_adapter(self, name):
        """Context manager: select adapter `name`, or disable adapters for the base model."""
        import contextlib

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

        L = max(len(p) for p in prompts)
        inp = torch.tensor([[self.pad_id] * (L - len(p)) + p for p in prompts])
        att = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
        kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
        out = self.model.generate(
            input_ids=inp, attention_mask=att, max_new_tokens=max_new, num_return_sequences=num_return,
            pad_token_id=self.pad_id, eos_token_id=self.eos_ids, **kw,
        )
        res = []
        for i in range(len(prompts)):
            choices = []
            for k in range(num_return):
                seq = out[i * num_return + k, L:].tolist()
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
                for j, g in zip(batch, gens):
                    ids, finish = g[0]
                    text, finish = self._finish_text(ids, finish, j.req.stop)
                    out.append(([(text, finish, len(ids))] * j.req.n, len(j.prompt_ids)))
                return out
            j = batch[0]
            r = j.req
            seed = r.seed if r.seed is not None else random.randrange(2**31)
            torch.manual_seed(seed)
            rng = random.Random(seed)
            if r.rf_kind == "json_schema" and structured.flat_properties(r.schema):
                props = structured.flat_properties(r.schema)
                if self._vocab is None:
                    self._vocab = structured.VocabSets(self.tok)
                sg = structured.StructuredGenerator(lambda: self.model, self.tok, self._vocab)
                choices = []
                for _ in range(r.n):
                    text = sg.build(j.prompt_ids, props, r.temperature, r.top_p, rng)
                    choices.append((text, "stop", len(self.tok.encode(text, add_special_tokens=False))))
                return [(choices, len(j.prompt_ids))]
            sample = r.temperature > 0
            if sample:
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

    # -- adapters (run on the model thread via control())
    def load_adapter(self, name: str, path: str):
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.base, path, adapter_name=name, is_trainable=False)
        self.model.eval()
        self.adapters[name] = path

    def unload_adapter(self, name: str):
        from peft import PeftModel

        if len(self.adapters) == 1 and isinstance(self.model, PeftModel):
            self.base = self.model.unload()  # removes the LoRA layers, back to the plain base model
            self.model = self.base
        else:
            self.model.delete_adapter(name)
        del self.adapters[name]

    # -- prompt
    def prompt_ids(self, req: ChatRequest) -> list[int]:
        msgs = req.messages
        if req.rf_kind != "text":
            ins = structured.instruction(req.rf_kind, req.schema)
            if msgs and msgs[0]["role"] == "system":
                msgs = [{"role": "system", "content": msgs[0]["content"] + "\n\n" + ins}] + msgs[1:]
            else:
                msgs = [{"role": "system", "content": ins}] + msgs
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        if len(ids) + req.max_tokens > self.max_ctx:
            raise bad(f"the prompt has {len(ids)} tokens; with max_tokens {req.max_tokens} it exceeds the "
                      f"context window of {self.max_ctx}", "messages")
        return list(ids)


# ---------------------------------------------------------------- HTTP app


def create_app(engine: Engine, ready_message: str | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse

    @asynccontextmanager
    async def lifespan(app):
        if ready_message:
            print(ready_message, file=sys.stderr, flush=True)
        yield

    app = FastAPI(title="slearn model server", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        return JSONResponse(bad(str(exc)).body(), status_code=400)

    async def body_json(request: Request):
        raw = await request.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"request body is not valid JSON: {e}") from None

    def model_card(mid, parent=None):
        return {"id": mid, "object": "model", "created": engine.created, "owned_by": "slearn",
                "root": engine.adapters.get(mid, mid), "parent": parent, "max_model_len": engine.max_ctx}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.served_name, "adapters": sorted(engine.adapters)}

    @app.get("/v1/models")
    async def models():
        data = [model_card(engine.served_name)]
        data += [model_card(a, engine.served_name) for a in sorted(engine.adapters)]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = parse_chat(await body_json(request), engine.served_name)
        if req.model == engine.served_name:
            adapter = None
        elif req.model in engine.adapters:
            adapter = req.model
        else:
            raise ApiError(404, f"The model `{req.model}` does not exist.", "invalid_request_error",
                           "model_not_found", "model")
        job = Job("gen", concurrent.futures.Future(), req=req, adapter=adapter, prompt_ids=engine.prompt_ids(req))
        choices, prompt_tokens = await asyncio.wrap_future(engine.submit(job))
        completion_tokens = sum(c[2] for c in choices)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": None,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                 "finish_reason": finish}
                for i, (text, finish, _) in enumerate(choices)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    @app.post("/v1/load_lora_adapter")
    async def load_lora(request: Request):
        body = await body_json(request)
        if not isinstance(body, dict):
            raise bad("request body must be a JSON object")
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name:
            raise bad("'lora_name' must be a non-empty string", "lora_name")
        if not isinstance(path, str) or not path:
            raise bad("'lora_path' must be a non-empty string", "lora_path")
        if name == engine.served_name or name in engine.adapters:
            raise bad(f"The lora adapter '{name}' has already been loaded.", "lora_name")
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise bad(f"No adapter found at '{path}' (expected adapter_config.json there)", "lora_path")
        try:
            await asyncio.wrap_future(engine.control(lambda: engine.load_adapter(name, path)))
        except Exception as e:  # noqa: BLE001
            raise bad(f"Loading lora adapter '{name}' from '{path}' failed: {type(e).__name__}: {e}") from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora(request: Request):
        body = await body_json(request)
        if not isinstance(body, dict):
            raise bad("request body must be a JSON object")
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise bad("'lora_name' must be a non-empty string", "lora_name")
        if name not in engine.adapters:
            raise ApiError(404, f"The lora adapter '{name}' cannot be found.", "invalid_request_error",
                           "adapter_not_found", "lora_name")
        await asyncio.wrap_future(engine.control(lambda: engine.unload_adapter(name)))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    return app


def run(args) -> int:
    import uvicorn

    adapters = []
    for spec in args.adapter:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise modelload.ModelSpecError(f"--adapter {spec!r}: expected NAME=PATH")
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise modelload.ModelSpecError(f"--adapter {spec!r}: no adapter_config.json in {path}")
        adapters.append((name, path))

    model, tok, _ = modelload.load_model_and_tokenizer(args.base)
    engine = Engine(model, tok, args.served_name, args.max_batch, args.batch_window_ms)
    for name, path in adapters:
        engine.control(lambda n=name, p=path: engine.load_adapter(n, p)).result()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    ready = f"slearn_trainer serve: ready on http://{host}:{port}/v1 (model {args.served_name}" + (
        f", adapters {', '.join(n for n, _ in adapters)}" if adapters else "") + ")"
    app = create_app(engine, ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0
