"""The HTTP side of the model server (FastAPI): routes, the bearer token, the body size limit,
adapter paths. Requests are validated by the models in api.py and run by the model thread in
engine.py; startup.py builds both from the command line.

What a client may ask is bounded (contract.json `limits`): the body size, `n`, `max_tokens` and
the response schema are capped; at most --max-queue requests wait for the model, then the answer
is 429 with Retry-After; a request whose client went away before the model reached it is
dropped. Tokenising runs on a thread of its own, off the event loop. With --api-key-env every
route but /health needs the bearer token; adapters load at run time only from below
--adapter-root (symlinks resolved), and /v1/models shows names, never paths.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import os
import sys
import time
import uuid
from pathlib import Path

from fastapi import Request  # module level: FastAPI resolves the (string) annotations here

from .api import LIMITS, ApiError, ChatRequest, LoadLoraRequest, UnloadLoraRequest, bad, validation_error
from .engine import Engine

# ---------------------------------------------------------------- HTTP app


class Guard:
    """ASGI middleware in front of every route: the bearer token (all but /health) and the body
    size limit (413). Bodies are read here, at most maxBodyBytes kept, then replayed to the app."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.expected = None if api_key is None else b"Bearer " + api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.expected is not None and scope["path"] != "/health":
            got = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(got, self.expected):
                err = ApiError(
                    401,
                    "missing or wrong API key: send the header Authorization: Bearer <token>",
                    "authentication_error",
                    "invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await err.response()(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client left before sending its body
            size += len(msg.get("body", b""))
            if size <= self.max_body:
                chunks.append(msg.get("body", b""))
            # read (and drop) a little past the limit so the client sees the 413, not a reset
            if not msg.get("more_body") or size > 16 * self.max_body:
                break
        if size > self.max_body:
            err = ApiError(
                413, f"the request body exceeds {self.max_body} bytes", "invalid_request_error", "request_too_large"
            )
            return await err.response()(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def result_unless_disconnected(request: Request, fut: concurrent.futures.Future):
    """The job's result; if the client leaves first, the job is cancelled, so the model thread
    drops it instead of generating for nobody (it may already be running: then it finishes)."""
    result = asyncio.wrap_future(fut)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        result.cancel()
        raise
    finally:
        gone.cancel()
    if not result.done():
        result.cancel()  # cancels fut too (asyncio chains the cancellation)
        raise ApiError(499, "the client closed the request", "invalid_request_error", "client_closed")
    return result.result()


def adapter_path(lora_path: str, root: Path | None) -> str:
    """The real path of an adapter a client asks to load: only below --adapter-root."""
    if root is None:
        raise bad(
            "loading adapters at run time is disabled on this server: start it with --adapter-root DIR to "
            "allow adapters from below DIR (adapters given with --adapter at start are served)",
            "lora_path",
        )
    p = Path(lora_path)
    real = Path(os.path.realpath(p if p.is_absolute() else root / p))
    if not real.is_relative_to(root):
        raise bad(f"'{lora_path}' is outside the server's --adapter-root", "lora_path")
    if not (real / "adapter_config.json").is_file():
        raise bad(f"No adapter found at '{lora_path}' (expected adapter_config.json there)", "lora_path")
    return str(real)


def create_app(
    engine: Engine, *, api_key: str | None = None, adapter_root: Path | None = None, ready_message: str | None = None
):
    """The FastAPI app over `engine`: the guard in front, then the error handlers, the read-only
    routes, chat completions and vLLM's adapter routes."""
    from fastapi import FastAPI

    tokenizer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenize")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if ready_message:
            print(ready_message, file=sys.stderr, flush=True)
        yield
        tokenizer_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="slearn model server", lifespan=lifespan)
    app.add_middleware(Guard, api_key=api_key, max_body=LIMITS["maxBodyBytes"])
    add_error_handlers(app)
    add_model_routes(app, engine)
    add_chat_route(app, engine, tokenizer_pool)
    add_adapter_routes(app, engine, adapter_root)
    return app


def add_error_handlers(app) -> None:
    """Every refusal in OpenAI's error shape."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        return validation_error(list(exc.errors())).response()


def model_card(engine: Engine, model_id: str, parent: str | None = None) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": engine.created,
        "owned_by": "slearn",
        "root": model_id,
        "parent": parent,
        "max_model_len": engine.max_ctx,
    }


def add_model_routes(app, engine: Engine) -> None:
    """GET /health (no token needed) and GET /v1/models: the base and its loaded adapters, by name."""

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": engine.served_name,
            "adapters": sorted(engine.adapters),
            "batching": dict(engine.stats),
        }

    @app.get("/v1/models")
    async def models():
        data = [model_card(engine, engine.served_name)]
        data += [model_card(engine, a, engine.served_name) for a in sorted(engine.adapters)]
        return {"object": "list", "data": data}


def completion_body(model: str, choices: list, prompt_tokens: int) -> dict:
    """A chat.completion object from the engine's (text, finish_reason, tokens) choices."""
    completion_tokens = sum(c[2] for c in choices)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            for i, (text, finish, _) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def add_chat_route(app, engine: Engine, tokenizer_pool: concurrent.futures.Executor) -> None:
    """POST /v1/chat/completions: tokenised off the event loop, generated by the model thread."""

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        model = body.model or engine.served_name
        if model != engine.served_name and model not in engine.adapters:
            raise ApiError(
                404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found", "model"
            )
        ids = await asyncio.get_running_loop().run_in_executor(tokenizer_pool, engine.prompt_ids, body)
        fut = engine.generate(body, None if model == engine.served_name else model, ids)
        choices, prompt_tokens = await result_unless_disconnected(request, fut)
        return completion_body(model, choices, prompt_tokens)


def add_adapter_routes(app, engine: Engine, adapter_root: Path | None) -> None:
    """vLLM's runtime LoRA routes: load from below --adapter-root only, unload by name."""
    from fastapi.responses import PlainTextResponse

    @app.post("/v1/load_lora_adapter")
    async def load_lora(body: LoadLoraRequest):
        name = body.lora_name
        if name == engine.served_name or name in engine.adapters:  # checked again on the model thread
            raise bad(f"The lora adapter '{name}' has already been loaded.", "lora_name")
        path = adapter_path(body.lora_path, adapter_root)
        try:
            await asyncio.wrap_future(engine.control(functools.partial(engine.load_adapter, name, path)))
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001
            raise bad(
                f"Loading lora adapter '{name}' from '{body.lora_path}' failed: {type(e).__name__}: {e}"
            ) from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora(body: UnloadLoraRequest):
        await asyncio.wrap_future(engine.control(functools.partial(engine.unload_adapter, body.lora_name)))
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
