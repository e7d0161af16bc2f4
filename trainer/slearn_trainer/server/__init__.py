"""The model server: `python -m slearn_trainer serve`, an OpenAI-compatible chat server with PEFT
LoRA adapters, beside the trainer in the same package (it loads bases the same way, modelload.py).

    startup.py     the command: checks, the model, the socket, uvicorn
    app.py         the HTTP side: guard (token, body size), routes, vLLM's adapter routes
    api.py         request models and OpenAI's error shape
    engine.py      the model thread: batches per window, adapters, stop tokens
    structured.py  response_format json_schema: constrained decoding of flat object schemas
"""

from .startup import bind, build, run

__all__ = ["bind", "build", "run"]
