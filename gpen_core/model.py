"""GPENModel: a loaded network plus what callers need to know about it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .devices import compute_dtype
from .errors import ImageError
from .network import GPEN, GPENConfig


class GPENModel:
    """A GPEN network ready for inference, with its inferred config and source file.

    ``net.forward`` takes float (B,3,S,S) RGB in [-1,1] and returns the same layout, range, dtype
    and device. :meth:`restore_crops` wraps it for aligned uint8 RGB face crops.
    """

    def __init__(self, net: GPEN, path: Path | None = None):
        self.net = net
        self.path = path

    @property
    def config(self) -> GPENConfig:
        """Hyper-parameters inferred from the checkpoint (size, channel multiplier, narrow, style_dim, n_mlp)."""
        return self.net.config

    @property
    def size(self) -> int:
        """Side S of the square face crop the network takes and returns, in pixels."""
        return self.net.config.size

    @property
    def device(self) -> torch.device:
        """Where the weights are, and so where the network runs."""
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (float32, float16 or bfloat16); ``net`` computes in its input's dtype,
        :meth:`restore_crops` in :attr:`compute_dtype`."""
        return next(self.net.parameters()).dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the network computes in where the weights are now: :attr:`dtype`, except float16 on
        the CPU, which computes in float32 (with a warning, see :func:`gpen_core.devices.compute_dtype`)."""
        return compute_dtype(self.dtype, self.device)

    def to(self, device: str | torch.device) -> GPENModel:
        """Move the weights to ``device`` in place; returns self."""
        self.net.to(device)
        return self

    def __repr__(self) -> str:
        name = self.path.name if self.path else "in-memory"
        computed = compute_dtype(self.dtype, self.device, warn=False)
        shown = f"{self.dtype}" if computed == self.dtype else f"{self.dtype} computed as {computed}"
        return f"GPENModel({name}, size={self.size}, device={self.device}, dtype={shown})"

    @torch.inference_mode()
    def restore_crops(self, crops: np.ndarray) -> np.ndarray:
        """Restore aligned faces: (B,S,S,3) uint8 RGB -> (B,S,S,3) uint8 RGB."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3) or crops.dtype != np.uint8:
            raise ImageError(f"restore_crops needs uint8 RGB crops of shape (B, {self.size}, {self.size}, 3), "
                             f"got {crops.dtype} {crops.shape}; align faces to the model size first")
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2)
        return self.restore_tensor(x).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def restore_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        """Restore aligned faces on the model's device: (B,3,S,S) RGB in 8-bit units [0, 255] (any dtype,
        integer values) -> (B,3,S,S) float32 RGB in 8-bit units, integer values, on the same device.

        Official pre/post-processing: (x/255 - 0.5)/0.5 in; x*0.5 + 0.5, clamp to [0,1], *255,
        rounded (the official truncates) out. Computes in :attr:`compute_dtype`.
        """
        x = ((crops.to(self.device).float() / 255.0 - 0.5) / 0.5).to(self.compute_dtype)
        return self.net(x).float().mul_(0.5).add_(0.5).clamp_(0, 1).mul_(255).round_()
