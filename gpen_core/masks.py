"""Paste-back masks for aligned face crops: GPEN's soft rectangle, or a face-parsing mask.

Masks are (S, S) float32 in [0, 1] in crop pixels. Both are made at 512 x 512, GPEN's working size,
and resized to S, so they look the same at every model size.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from .errors import CheckpointError, ModelNotFoundError
from .options import MASK_KINDS

MASK_SIZE = 512
BORDER = 26  # px at 512 that never receive the restored face
_BLUR_KSIZE, _BLUR_SIGMA = (101, 101), 4

# Classes that stay original: background, hat, cloth. The two networks number their 19 classes differently.
_PARSENET_DROP = (0, 14, 18)
_BISENET_DROP = (0, 16, 18)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

MaskFn = Callable[[np.ndarray], np.ndarray]


def _soften(hard: np.ndarray) -> np.ndarray:
    """GPEN's feathering: blur a 512 x 512 float mask twice with a 101 px, sigma-4 Gaussian."""
    soft = cv2.GaussianBlur(hard, _BLUR_KSIZE, _BLUR_SIGMA)
    return cv2.GaussianBlur(soft, _BLUR_KSIZE, _BLUR_SIGMA)


def _to_size(mask: np.ndarray, size: int) -> np.ndarray:
    return mask if size == MASK_SIZE else cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=8)
def _rectangle(size: int) -> np.ndarray:
    hard = np.zeros((MASK_SIZE, MASK_SIZE), np.float32)
    last = MASK_SIZE - BORDER
    cv2.rectangle(hard, (BORDER, BORDER), (last, last), 1.0, thickness=-1, lineType=cv2.LINE_AA)
    mask = _to_size(_soften(hard), size)
    mask.setflags(write=False)
    return mask


def rectangle_mask(size: int) -> np.ndarray:
    """GPEN's default paste mask for an S x S crop: (S, S) float32 in [0, 1], read-only.

    A filled square inset 26 px (at 512), blurred twice (101 px kernel, sigma 4), resized to S.
    """
    return _rectangle(int(size))


def soften_parsing(keep: np.ndarray, size: int) -> np.ndarray:
    """Turn a hard 512 x 512 keep-mask (1 = face) into a paste mask: (S, S) float32 in [0, 1].

    Zeroes a 26 px border and blurs twice like GPEN's ``mask_postprocess``, then resizes to S.
    """
    keep = keep.astype(np.float32, copy=True)
    keep[:BORDER], keep[-BORDER:], keep[:, :BORDER], keep[:, -BORDER:] = 0, 0, 0, 0
    return _to_size(_soften(keep), size)


class FaceParser:
    """A facexlib face-parsing network (ParseNet or BiSeNet) producing paste masks.

    Call with restored crops (B, S, S, 3) uint8 RGB; returns (B, S, S) float32 masks in [0, 1].
    """

    def __init__(self, net: torch.nn.Module, kind: str, device: torch.device):
        self.net, self.kind, self.device = net, kind, device

    def _input(self, crops: np.ndarray) -> torch.Tensor:
        resized = np.stack([cv2.resize(c, (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_LINEAR)
                            if c.shape[0] != MASK_SIZE else c for c in crops])
        x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if self.kind == "bisenet":
            mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
            return (x - mean) / std
        return x * 2 - 1  # ParseNet: RGB in [-1, 1]

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        logits = self.net(self._input(crops))[0]
        labels = logits.argmax(dim=1).cpu().numpy()
        drop = _BISENET_DROP if self.kind == "bisenet" else _PARSENET_DROP
        keep = ~np.isin(labels, drop)
        return np.stack([soften_parsing(k, crops.shape[1]) for k in keep])


def _parsing_kind(state: dict) -> str:
    if any(k.startswith("cp.resnet.") for k in state):
        return "bisenet"
    if any(k.startswith("encoder.") for k in state) and any(k.startswith("out_mask_conv.") for k in state):
        return "parsenet"
    raise CheckpointError("not a facexlib face-parsing file (expected parsing_parsenet.pth or parsing_bisenet.pth)")


@functools.lru_cache(maxsize=4)
def _load_parser(path: str, device: str) -> FaceParser:
    try:
        state = torch.serialization.load(path, map_location="cpu", weights_only=True)  # as checkpoint.py
    except Exception as exc:  # corrupt file, pickle refused, ...
        raise CheckpointError(f"cannot read face-parsing weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    kind = _parsing_kind(state)
    if kind == "bisenet":
        from facexlib.parsing.bisenet import BiSeNet
        net = BiSeNet(num_class=19)
    else:
        from facexlib.parsing.parsenet import ParseNet
        net = ParseNet(in_size=MASK_SIZE, out_size=MASK_SIZE, parsing_ch=19)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match facexlib's {kind}: {exc}") from exc
    return FaceParser(net.eval().to(device), kind, torch.device(device))


def load_parser(path: str | Path, device: str | torch.device = "cpu") -> FaceParser:
    """Load facexlib parsing weights (``parsing_parsenet.pth`` / ``parsing_bisenet.pth``) from disk.

    Never downloads; the architecture is read from the state-dict keys; loaded with weights_only=True.
    Cached per (path, device). Raises CheckpointError for a file that is not such a network.
    """
    return _load_parser(str(Path(path).resolve()), str(torch.device(device)))


def make_mask_fn(kind: str, size: int, *, search_dirs=(), device=None) -> tuple[MaskFn, str]:
    """Choose the paste mask: kind "auto" (parsing if weights are found, else rectangle), "parsing", "rectangle".

    Returns (fn, used) where fn maps restored crops (B, S, S, 3) uint8 RGB to (B, S, S) float32 masks and
    used is "parsing" or "rectangle". Raises ModelNotFoundError for "parsing" without weights.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask must be one of {MASK_KINDS}, not {kind!r}")
    if kind != "rectangle":
        from .model_paths import facexlib_weight_dirs, find_facexlib_weights
        path = find_facexlib_weights("parsing", search_dirs=tuple(search_dirs))
        if path is not None:
            return load_parser(path, device or "cpu"), "parsing"
        if kind == "parsing":
            folders = "\n  ".join(str(d) for d in facexlib_weight_dirs(search_dirs))
            raise ModelNotFoundError(
                "no face-parsing weights found: put facexlib's parsing_parsenet.pth (or parsing_bisenet.pth) "
                f"in one of:\n  {folders}\nor name the file with GPEN_PARSING_WEIGHTS, or use mask='rectangle'")
    rect = rectangle_mask(size)
    return (lambda crops: np.broadcast_to(rect, (len(crops), size, size))), "rectangle"
