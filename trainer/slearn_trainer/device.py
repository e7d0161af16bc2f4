"""Where and in which precision the trainer and the server run.

`choose()` is the whole policy, a pure function: `auto` means CUDA when there is a GPU, bf16
where the GPU supports it, fp16 on other GPUs, fp32 on CPU; an explicit choice this machine
cannot honour is refused at once (before any model is loaded), not silently downgraded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from .events import FatalError

PRECISIONS = ("bf16", "fp16", "fp32")


class DeviceError(FatalError):
    """The requested device, precision or quantization is not available here."""


def choose(device: str, precision: str, cuda_available: bool, bf16_supported: bool) -> tuple[str, str]:
    """(device, precision) for the requested `auto|cuda|cpu` and `auto|bf16|fp16|fp32`."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif device == "cuda" and not cuda_available:
        raise DeviceError(
            "--device cuda: no CUDA GPU is available on this machine (torch.cuda.is_available() is false); "
            "use --device auto or --device cpu" + (f": {why}" if (why := _why_no_cuda()) else "")
        )
    elif device not in ("cuda", "cpu"):
        raise DeviceError(f"--device {device}: expected auto, cuda or cpu")
    if precision == "auto":
        if device == "cpu":
            return device, "fp32"
        return device, "bf16" if bf16_supported else "fp16"
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision}: expected auto, bf16, fp16 or fp32")
    if device == "cpu" and precision != "fp32":
        raise DeviceError(f"--precision {precision} needs a GPU; on CPU use --precision fp32 (or auto)")
    if precision == "bf16" and not bf16_supported:
        raise DeviceError("--precision bf16: this GPU does not support bf16; use --precision fp16 (or auto)")
    return device, precision


def _why_no_cuda() -> str | None:
    try:
        return cuda_unavailable()
    except ImportError:
        return None


def check_quantization(quantization: str, device: str, bitsandbytes_installed: bool) -> None:
    """4-bit QLoRA needs CUDA and the optional bitsandbytes package."""
    if quantization == "none":
        return
    if device != "cuda":
        raise DeviceError(f"--quantization {quantization} needs a CUDA GPU (running on {device})")
    if not bitsandbytes_installed:
        raise DeviceError(f"--quantization {quantization} needs bitsandbytes, an optional extra: {QLORA_INSTALL}")


QLORA_INSTALL = "pip install 'slearn_trainer[qlora]' (or pip install -r trainer/requirements-qlora.lock)"


def check_attention(attention: str, device: str, precision: str) -> str:
    """The attn_implementation transformers gets: `auto` is flash-attention on CUDA in bf16/fp16 where
    the flash-attn package is installed, SDPA otherwise; an explicit `flash` it cannot honour is refused."""
    flash_ok = device == "cuda" and precision in ("bf16", "fp16")
    if attention == "auto":
        return "flash_attention_2" if flash_ok and installed("flash_attn") else "sdpa"
    if attention == "flash":
        if not flash_ok:
            raise DeviceError(f"--attention flash needs CUDA in bf16 or fp16 (running on {device}, {precision})")
        if not installed("flash_attn"):
            raise DeviceError("--attention flash needs the flash-attn package: pip install flash-attn")
        return "flash_attention_2"
    return attention  # sdpa | eager


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Runtime:
    device: str  # "cuda" | "cpu"
    precision: str  # "bf16" | "fp16" | "fp32"
    index: int = 0  # the GPU of this process (its LOCAL_RANK under torchrun)

    @property
    def dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    @property
    def torch_device(self):
        """Where this process's tensors live: `cuda:LOCAL_RANK`, or the CPU."""
        import torch

        return torch.device("cuda", self.index) if self.device == "cuda" else torch.device("cpu")


def _probe() -> tuple[bool, bool]:
    import torch

    cuda = torch.cuda.is_available()
    return cuda, bool(cuda and torch.cuda.is_bf16_supported())


def resolve(device: str = "auto", precision: str = "auto", index: int = 0) -> Runtime:
    """The Runtime for the requested device and precision on this machine (imports torch); `index`
    is the GPU of this process (torchrun's LOCAL_RANK), refused when the host has fewer GPUs."""
    rt = Runtime(*choose(device, precision, *_probe()), index=index)
    if rt.device == "cuda":
        import torch

        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"process {index} of this host needs GPU {index}, but torch sees {torch.cuda.device_count()} "
                "(CUDA_VISIBLE_DEVICES?): lower train.processes"
            )
    return rt


def driver_version() -> str | None:
    """The NVIDIA kernel driver of this host, as it reports itself (None without one)."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    for word in first.split():
        if word[:1].isdigit() and "." in word:
            return word
    return first.strip() or None


def cuda_unavailable() -> str | None:
    """Why torch cannot use CUDA here, in torch's own words, with the two versions that usually
    explain it (the driver's and the CUDA that torch was built for); None when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
    try:
        torch.cuda.init()
        reason = "torch found no usable GPU"
    except Exception as e:  # noqa: BLE001  (torch says why: no driver, a driver too old for its CUDA, no device)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = (
        " CUDA_VISIBLE_DEVICES is empty, which hides every GPU." if visible is not None and not visible.strip() else ""
    )
    driver = driver_version()
    return (
        f"{reason} (torch {torch.__version__} is built for CUDA {torch.version.cuda}; "
        f"{'NVIDIA driver ' + driver if driver else 'no NVIDIA driver is loaded'}).{hidden}"
    )


def gpus(count: int | None = None) -> list[dict]:
    """Name and memory of the first `count` GPUs (all by default)."""
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count() if count is None else min(count, torch.cuda.device_count())
    out = []
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        out.append({"name": p.name, "memoryBytes": int(p.total_memory)})
    return out


def info() -> dict:
    """`python -m slearn_trainer info`: what `auto` would use here (the contract's `info`), and why
    not CUDA when it would not."""
    import torch

    cuda, bf16 = _probe()
    rt = Runtime(*choose("auto", "auto", cuda, bf16))
    return {
        "device": rt.device,
        "precision": rt.precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": gpus(),
        "bf16Supported": bf16,
        "cudaUnavailable": cuda_unavailable(),
        "driver": driver_version(),
        "flashAttention": installed("flash_attn"),
        "bitsandbytes": installed("bitsandbytes"),
    }
