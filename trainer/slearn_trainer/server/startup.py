"""Starting the model server: every cheap check first (device, token, adapter paths), then the
model, then the socket's app (`python -m slearn_trainer serve`)."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

from .. import device, modelload
from ..arguments import ServeArguments
from ..events import FatalError
from .app import create_app
from .engine import Engine


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


def build(args: ServeArguments, ready_message: str | None = None):
    """(engine, app) for parsed `serve` arguments: every cheap check first, then the model."""
    runtime = device.resolve(args.device, args.precision)
    api_key = _api_key(args.api_key_env)
    root = _adapter_root(args.adapter_root)
    adapters = _startup_adapters(args.adapter, args.max_adapters)
    model, tok, _ = modelload.load_model_and_tokenizer(args.base, runtime, chat_template=args.chat_template)
    engine = Engine(
        model,
        tok,
        served_name=args.served_name,
        max_batch=args.max_batch,
        window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        max_adapters=args.max_adapters,
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


def run(args: ServeArguments) -> int:
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
