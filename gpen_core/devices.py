"""Choice of torch device and dtype."""

from __future__ import annotations

import warnings

import torch

from .errors import DeviceError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def best_device() -> torch.device:
    """The fastest device present: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`best_device`; anything else as torch understands it, checked to exist.

    Raises DeviceError for a device name torch does not know, or a CUDA/MPS device this machine or torch
    build does not have, naming the fix.
    """
    if device is None or device == "auto":
        return best_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    check_device(resolved)
    return resolved


def check_device(device: torch.device) -> None:
    """Raise DeviceError unless ``device`` exists here (CPU always does)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is usable"
            raise DeviceError(f"device '{device}': CUDA is not available ({build}; torch {torch.__version__}); "
                              f"use device 'cpu' (or 'auto'), or install a CUDA build of torch on a machine "
                              f"with an NVIDIA GPU")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device '{device}' does not exist: this machine has {count} CUDA device"
                              f"{'s' if count != 1 else ''} (cuda:0{f'..cuda:{count - 1}' if count > 1 else ''}); "
                              f"pick one of them or 'cpu'")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device '{device}': Apple MPS is not available (it needs macOS on Apple silicon "
                              f"and a torch build with MPS); use device 'cpu' (or 'auto')")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None``/``"auto"`` -> float32; names like ``"fp16"``/``"bf16"`` or a torch dtype."""
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        try:
            resolved = DTYPES[str(dtype).lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}: use one of fp32, fp16, bf16") from None
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported dtype {resolved}: use float32, float16 or bfloat16")
    return resolved


class SlowDtypeWarning(UserWarning):
    """A requested precision would be much slower on its device, so another one is used."""


_warned_cpu_fp16 = False


def compute_dtype(dtype: torch.dtype, device: str | torch.device, warn: bool = True) -> torch.dtype:
    """The dtype the network computes in on ``device`` when its weights are ``dtype``.

    float16 on the CPU is replaced by float32 with a :class:`SlowDtypeWarning` (given once per process):
    CPUs have no fast float16 convolutions, GPEN runs 10-12x slower in it than in float32. The weights
    keep their dtype (a host may move the model to a GPU later); bfloat16 is kept, as asked.
    ``warn=False`` only asks (for display).
    """
    global _warned_cpu_fp16
    if dtype != torch.float16 or torch.device(device).type != "cpu":
        return dtype
    if warn and not _warned_cpu_fp16:
        _warned_cpu_fp16 = True
        warnings.warn("GPEN: fp16 on the CPU runs 10-12x slower than fp32 (CPUs have no fast float16 "
                      "convolutions), so it computes in fp32 there. Choose fp32 (or bf16, faster on CPUs with "
                      "AVX512-BF16 or AMX) for CPU runs, or a CUDA/MPS device for fp16.",
                      SlowDtypeWarning, stacklevel=2)
    return torch.float32
