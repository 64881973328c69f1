"""The pipeline's crop, mask and paste-back steps in torch, so they run where the model runs (CUDA, MPS).

With these, a frame crosses from the host to the device once and back once, whatever its number of faces.
The arithmetic is that of the numpy/OpenCV path (alignment.py, masks.py, blending.py) and gives the same
pixels within one grey level: bilinear sampling at exact (unquantised) source coordinates, pixel centres
at integer coordinates, black outside the source, and the same rounding points. Device-agnostic torch;
tested on the CPU against the OpenCV path.

Tensors: frames (C, H, W) float32 in image units (C = 3 RGB or 1 gray); crops (B, 3, S, S) float32 RGB in
8-bit units [0, 255]; masks (B, S, S) float32 in [0, 1]; matrices (2, 3) float64 image px -> crop px.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .alignment import crop_footprint, invert_transform
from .blending import _GRAY_WEIGHTS, _SMALL_FACE_KERNEL, MASK_MARGIN, match_colour
from .masks import (_BISENET_DROP, _BLUR_KSIZE, _BLUR_SIGMA, _IMAGENET_MEAN, _IMAGENET_STD, _PARSENET_DROP,
                    BORDER, MASK_SIZE, FaceParser, rectangle_mask)


def _normalizer(width: int, height: int) -> np.ndarray:
    """(3, 3) map from pixel coordinates to grid_sample's [-1, 1] ones (align_corners=False)."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]])


def warp(source: torch.Tensor, inverse: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear warp of ``source`` (1 or N, C, H, W) float into N outputs (N, C, h, w).

    ``inverse``: (N, 2, 3) maps output pixels to source pixels (cv2.warpAffine with WARP_INVERSE_MAP);
    source pixels outside the image count as 0 (BORDER_CONSTANT 0).
    """
    inverse = np.asarray(inverse, np.float64).reshape(-1, 2, 3)
    n, (height, width) = len(inverse), out_hw
    full = np.concatenate([inverse, np.broadcast_to([[[0.0, 0.0, 1.0]]], (n, 1, 3))], axis=1)
    theta = _normalizer(source.shape[-1], source.shape[-2]) @ full @ np.linalg.inv(_normalizer(width, height))
    theta_t = torch.from_numpy(theta[:, :2].astype(np.float32)).to(source.device)
    grid = F.affine_grid(theta_t, [n, source.shape[1], height, width], align_corners=False)
    source = source.expand(n, -1, -1, -1) if source.shape[0] == 1 else source
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _region_inverse(matrix: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """The crop -> image warp restricted to ``region`` (y0, y1, x0, x1): region px -> crop px."""
    y0, _, x0, _ = region
    shifted = np.asarray(matrix, np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)
    return shifted


def upload_image(colour: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) uint8/uint16 numpy -> (C, H, W) float32 on ``device``, same values; one transfer."""
    if colour.dtype == np.uint16:  # sent as int16 bits (torch has few uint16 ops), unsigned again on the device
        raw = torch.from_numpy(np.ascontiguousarray(colour).view(np.int16)).to(device)
        values = raw.to(torch.int32).bitwise_and_(0xFFFF)
    else:
        values = torch.from_numpy(np.ascontiguousarray(colour)).to(device)
    return values.permute(2, 0, 1).float()


def soften_small_faces(faces: torch.Tensor) -> torch.Tensor:
    """blending.soften_small_face for (B, 3, S, S): 3x3 binomial blur, reflected (101) borders."""
    kernel = torch.from_numpy(_SMALL_FACE_KERNEL).to(faces.device).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(faces, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)


@functools.lru_cache(maxsize=4)
def _gaussian(device: torch.device) -> torch.Tensor:
    taps = cv2.getGaussianKernel(_BLUR_KSIZE[0], _BLUR_SIGMA).astype(np.float32).ravel()
    return torch.from_numpy(taps).to(device)


def _soften(hard: torch.Tensor) -> torch.Tensor:
    """masks._soften for (B, 512, 512): the 101 px sigma-4 Gaussian twice, separable, reflected borders."""
    taps = _gaussian(hard.device)
    pad = len(taps) // 2
    x = hard[:, None]
    for _ in range(2):
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), taps.view(1, 1, -1, 1))
    return x[:, 0]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.resize INTER_LINEAR (half-pixel centres, no antialiasing) of (B, C, H, W) to size x size."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


class ParsingMasks:
    """A FaceParser's masks computed on its device: (B, 3, S, S) crops in 8-bit units -> (B, S, S)."""

    def __init__(self, parser: FaceParser):
        self.parser = parser

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        size, device = crops.shape[-1], self.parser.device
        x = _resize(crops.to(device), MASK_SIZE).round_().clamp_(0, 255) / 255.0
        if self.parser.kind == "bisenet":
            x = (x - torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)) / torch.tensor(
                _IMAGENET_STD, device=device).view(1, 3, 1, 1)
        else:
            x = x * 2 - 1
        labels = self.parser.net(x)[0].argmax(dim=1)
        drop = _BISENET_DROP if self.parser.kind == "bisenet" else _PARSENET_DROP
        keep = (~torch.isin(labels, torch.tensor(drop, device=device))).float()
        keep[:, :BORDER], keep[:, -BORDER:], keep[:, :, :BORDER], keep[:, :, -BORDER:] = 0, 0, 0, 0
        return _resize(_soften(keep)[:, None], size)[:, 0].to(crops.device)


def device_mask_fn(mask_fn, size: int, device: torch.device):
    """The tensor version of a ``masks.make_mask_fn`` function: (B, 3, S, S) on device -> (B, S, S)."""
    if isinstance(mask_fn, FaceParser):
        return ParsingMasks(mask_fn)
    rect = torch.from_numpy(np.array(rectangle_mask(size))).to(device)
    return lambda crops: rect.expand(len(crops), -1, -1)


class DeviceFrame:
    """An image on a torch device: aligned crops are cut from it and restored faces pasted into it.

    The compositing rule is blending.Compositor's: each pasted pixel is ``round(base * (1 - m) + face * m)``
    with the largest mask m seen there so far (an earlier face keeps a pixel on ties, within MASK_MARGIN).
    """

    def __init__(self, colour: np.ndarray, device: torch.device):
        """``colour``: (H, W, C) uint8 or uint16, C = 3 (RGB) or 1 (gray); copied to ``device`` once."""
        self.dtype = colour.dtype
        self.base = upload_image(colour, device)
        self.image = self.base.clone()
        self.mask = torch.zeros(colour.shape[:2], device=device)
        self.unit = 257.0 if colour.dtype == np.uint16 else 1.0  # 8-bit units -> image units
        self.max = float(np.iinfo(colour.dtype).max)

    def crops(self, matrices: list[np.ndarray], size: int) -> torch.Tensor:
        """Aligned crops (B, 3, S, S) float32 RGB in 8-bit units, cut at the image's own precision."""
        inverse = np.stack([invert_transform(m) for m in matrices])
        crops = warp(self.base[None], inverse, (size, size))
        crops = crops / self.unit if self.unit != 1.0 else crops
        return crops.expand(-1, 3, -1, -1) if crops.shape[1] == 1 else crops

    def paste(self, face: torch.Tensor, mask: torch.Tensor, matrix: np.ndarray) -> None:
        """Paste one crop: face (3, S, S) float32 RGB 8-bit units, mask (S, S), matrix image->crop (2, 3)."""
        region = crop_footprint(matrix, face.shape[-1], self.mask.shape)
        if region is None:
            return
        y0, y1, x0, x1 = region
        both = torch.cat([face.float(), mask[None].float()])[None]
        warped = warp(both, _region_inverse(matrix, region)[None], (y1 - y0, x1 - x0))[0]
        f, m = warped[:3], warped[3]
        if self.base.shape[0] == 1:
            f = (f * torch.from_numpy(_GRAY_WEIGHTS).to(f.device).view(3, 1, 1)).sum(0, keepdim=True)
        current = self.mask[y0:y1, x0:x1]
        wins = m > current + MASK_MARGIN
        value = self.base[:, y0:y1, x0:x1] * (1 - m) + f * self.unit * m
        value = value.round_().clamp_(0, self.max)
        self.image[:, y0:y1, x0:x1] = torch.where(wins, value, self.image[:, y0:y1, x0:x1])
        self.mask[y0:y1, x0:x1] = torch.where(wins, m, current)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The composite (H, W, C) in the input dtype and the paste mask (H, W) float32, on the host."""
        image = self.image.permute(1, 2, 0)
        image = image.to(torch.uint8) if self.dtype == np.uint8 else image.to(torch.int32)
        return image.cpu().numpy().astype(self.dtype, copy=False), self.mask.cpu().numpy()


def finish_face(restored: torch.Tensor, aligned: torch.Tensor, mask: torch.Tensor, *, alpha: float,
                color_correction: bool, small: bool) -> torch.Tensor:
    """pipeline's per-face touches on the device: colour match, small-face blur, alpha mix; (3, S, S) in/out.

    Colour correction (CIELAB statistics) goes through OpenCV on the host for that one crop.
    """
    face = restored
    if color_correction:
        to_host = lambda t: t.permute(1, 2, 0).float().cpu().numpy()  # noqa: E731
        matched = match_colour(to_host(face), to_host(aligned), mask.float().cpu().numpy())
        face = torch.from_numpy(matched).to(face.device).permute(2, 0, 1)
    if small:
        face = soften_small_faces(face[None])[0]
    if alpha < 1.0:
        face = face * alpha + aligned * (1.0 - alpha)
    return face
