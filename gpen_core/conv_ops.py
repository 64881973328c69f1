"""Convolutions with their bias, leaky ReLU or accumulation fused in, where the backend allows.

On CPU (float32/bfloat16) these call oneDNN's fused convolution ops, the ones torch.compile uses,
so the activation or the sum costs no extra pass over a feature map. Elsewhere (CUDA, MPS, float16
on CPU, a torch without those ops) the same arithmetic runs as separate standard ops.
Tensors are NCHW (channels-last in memory on CPU); weights as for ``torch.nn.functional.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEGATIVE_SLOPE = 0.2


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


#: Whether the fused oneDNN path may be used at all (tests switch it off to compare both paths).
ONEDNN = _onednn_available()


def _fused(x: torch.Tensor) -> bool:
    return ONEDNN and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)


def _pair(value: int) -> list[int]:
    return [value, value]


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
           padding: int = 0, groups: int = 1, leaky: bool = False) -> torch.Tensor:
    """``conv2d(x) + bias``, then ``leaky_relu(., 0.2)`` if ``leaky`` (no sqrt 2 gain)."""
    if _fused(x):
        attr, scalars = ("leaky_relu", [NEGATIVE_SLOPE]) if leaky else ("none", [])
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, _pair(padding), _pair(stride), _pair(1), groups, attr, scalars, "")
    out = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
    return F.leaky_relu_(out, NEGATIVE_SLOPE) if leaky else out


def conv2d_add_(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, *, padding: int = 0) -> torch.Tensor:
    """``out += conv2d(x, weight)`` in place (stride 1); returns ``out``."""
    if _fused(x) and out.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(
            memory_format=torch.channels_last):
        return torch.ops.mkldnn._convolution_pointwise_(
            out, x, weight, None, _pair(padding), _pair(1), _pair(1), 1, "add", 1.0, None, [], None)
    return out.add_(F.conv2d(x, weight, padding=padding))
