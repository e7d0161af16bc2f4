"""`python -m slearn_trainer serve`: OpenAI-compatible chat server with PEFT LoRA adapters.

The HTTP side (FastAPI): routes, the bearer token, the body size limit, adapter paths. Requests
are validated by the models in api.py and run by the model thread in engine.py.

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
import socket
import sys
import time
import uuid
from pathlib import Path

from fastapi import Request  # module level: FastAPI resolves the (string) annotations here

from . import device, modelload
from .api import LIMITS, ApiError, ChatRequest, LoadLoraRequest, UnloadLoraRequest, bad, validation_error
from .engine import Engine
from .events import FatalError

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
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse

    tokenizer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenize")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if ready_message:
            print(ready_message, file=sys.stderr, flush=True)
        yield
        tokenizer_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="slearn model server", lifespan=lifespan)
    app.add_middleware(Guard, api_key=api_key, max_body=LIMITS["maxBodyBytes"])

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        return validation_error(list(exc.errors())).response()

    def model_card(mid, parent=None):
        return {
            "id": mid,
            "object": "model",
            "created": engine.created,
            "owned_by": "slearn",
            "root": mid,
            "parent": parent,
            "max_model_len": engine.max_ctx,
        }

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
        data = [model_card(engine.served_name)]
        data += [model_card(a, engine.served_name) for a in sorted(engine.adapters)]
        return {"object": "list", "data": data}

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

    return app


# ---------------------------------------------------------------- startup


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    token = os.environ.get(env_name, "")
    if not token:
        raise FatalError(f"--api-key-env {env_name}: the environment variable {env_name} is not set or empty")
    return token


def _adapter_root(root: str | None) -> Path | None:
    if root is None:
        return None
    real = Path(os.path.realpath(root))
    if not real.is_dir():
        raise FatalError(f"--adapter-root {root}: not a directory")
    return real


def _startup_adapters(specs: list[str], max_adapters: int) -> list[tuple[str, str]]:
    adapters = []
    for spec in specs:
        name, _, path = spec.partition("=")
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise FatalError(f"--adapter {spec!r}: no adapter_config.json in {path}")
        adapters.append((name, os.path.realpath(path)))
    if len(adapters) > max_adapters:
        raise FatalError(f"{len(adapters)} --adapter options but --max-adapters is {max_adapters}")
    return adapters


def build(args, ready_message: str | None = None):
    """(engine, app) for parsed `serve` arguments: every cheap check first, then the model."""
    runtime = device.resolve(args.device, args.precision)
    api_key = _api_key(args.api_key_env)
    root = _adapter_root(args.adapter_root)
    adapters = _startup_adapters(args.adapter, args.max_adapters)
    model, tok, _ = modelload.load_model_and_tokenizer(args.base, runtime)
    engine = Engine(
        model, tok, args.served_name, args.max_batch, args.batch_window_ms, args.max_queue, args.max_adapters
    )
    for name, path in adapters:
        engine.control(functools.partial(engine.load_adapter, name, path)).result()
    return engine, create_app(engine, api_key=api_key, adapter_root=root, ready_message=ready_message)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run(args) -> int:
    import uvicorn

    sock = bind(args.host, args.port)  # a port in use fails before the model loads
    host = f"[{args.host}]" if ":" in args.host else args.host
    names = [spec.partition("=")[0] for spec in args.adapter]
    ready = (
        f"slearn_trainer serve: ready on http://{host}:{sock.getsockname()[1]}/v1 (model {args.served_name}"
        + (f", adapters {', '.join(names)}" if names else "")
        + ")"
    )
    _, app = build(args, ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
