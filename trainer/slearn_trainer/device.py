"""Where and in which precision the trainer and the server run.

`choose()` is the whole policy, a pure function: `auto` means CUDA when there is a GPU, bf16
where the GPU supports it, fp16 on other GPUs, fp32 on CPU; an explicit choice this machine
cannot honour is refused at once (before any model is loaded), not silently downgraded.
"""

from __future__ import annotations

import importlib.util
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
            "use --device auto or --device cpu"
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


def check_quantization(quantization: str, device: str, bitsandbytes_installed: bool) -> None:
    """4-bit QLoRA needs CUDA and the optional bitsandbytes package."""
    if quantization == "none":
        return
    if device != "cuda":
        raise DeviceError(f"--quantization {quantization} needs a CUDA GPU (running on {device})")
    if not bitsandbytes_installed:
        raise DeviceError(
            f"--quantization {quantization} needs bitsandbytes, an optional extra: pip install 'slearn_trainer[qlora]'"
        )


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Runtime:
    device: str  # "cuda" | "cpu"
    precision: str  # "bf16" | "fp16" | "fp32"

    @property
    def dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]


def _probe() -> tuple[bool, bool]:
    import torch

    cuda = torch.cuda.is_available()
    return cuda, bool(cuda and torch.cuda.is_bf16_supported())


def resolve(device: str = "auto", precision: str = "auto") -> Runtime:
    """The Runtime for the requested device and precision on this machine (imports torch)."""
    return Runtime(*choose(device, precision, *_probe()))


def info() -> dict:
    """`python -m slearn_trainer info`: what `auto` would use here (the contract's `info`)."""
    import torch

    cuda, bf16 = _probe()
    rt = Runtime(*choose("auto", "auto", cuda, bf16))
    gpus = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memoryBytes": int(p.total_memory)})
    return {
        "device": rt.device,
        "precision": rt.precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "bf16Supported": bf16,
    }
