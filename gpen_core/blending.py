"""Blending restored faces: crop-space touches (small-face blur, alpha, colour match) and paste-back.

Crop-space images are (S, S, 3) float32 RGB in 8-bit units [0, 255]; masks (S, S) float32 in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from .alignment import crop_footprint, warp_from_crop

SMALL_FACE_PX = 100  # GPEN softens restored faces whose detected box is narrower or shorter than this
_SMALL_FACE_KERNEL = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16  # 3x3 binomial
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY
#: A face takes a pixel from an earlier one only where its mask is larger by more than this, so that rounding
#: noise of the warps (about 1e-7, and different in OpenCV and torch) never decides which face owns a pixel.
MASK_MARGIN = 1e-5


def soften_small_face(face: np.ndarray) -> np.ndarray:
    """GPEN's light 3x3 binomial blur for restored faces that were small in the photo; float32 in/out."""
    return cv2.filter2D(face, -1, _SMALL_FACE_KERNEL, borderType=cv2.BORDER_REFLECT_101)


def mix(restored: np.ndarray, aligned: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * restored + (1 - alpha) * aligned input crop; alpha in [0, 1]; float32 in 8-bit units."""
    if alpha >= 1.0:
        return restored
    return restored * np.float32(alpha) + aligned * np.float32(1.0 - alpha)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def match_colour(restored: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Give the restored face the per-channel mean and standard deviation (in CIELAB) of the input face.

    restored, reference: (S, S, 3) RGB in 8-bit units; weight: (S, S) in [0, 1], where statistics are
    taken (the paste mask). Returns float32 RGB in [0, 255]. Counters GPEN's colour shift.
    """
    w = weight.astype(np.float64)[..., None]
    total = w.sum()
    if total < 1.0:
        return restored.astype(np.float32)
    src, ref = _lab(restored), _lab(reference)

    def stats(lab):
        mean = (lab * w).sum((0, 1)) / total
        std = np.sqrt(((lab - mean) ** 2 * w).sum((0, 1)) / total)
        return mean, std

    (src_mean, src_std), (ref_mean, ref_std) = stats(src), stats(ref)
    gain = ref_std / np.maximum(src_std, 1e-3)
    lab = ((src - src_mean) * gain + ref_mean).astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255.0
    return np.clip(rgb, 0, 255).astype(np.float32)


class Compositor:
    """Running paste-back of faces onto a copy of an image; memory O(H*W) however many faces.

    ``base``: (H, W, C) uint8 or uint16 colour channels of the input (C = 3 RGB or 1 gray), left untouched;
    ``target``: where the composite goes, same shape and dtype (default: a copy of base).
    Each pasted pixel is ``round(base * (1 - m) + face * m)`` with the largest mask m seen there so far
    (an earlier face keeps a pixel on ties, within MASK_MARGIN), which equals GPEN's merge-then-composite.
    Pixels no face reaches keep their exact input value.
    """

    def __init__(self, base: np.ndarray, target: np.ndarray | None = None):
        if base.ndim != 3 or base.shape[2] not in (1, 3):
            raise ValueError(f"base must be (H, W, 1|3), got {base.shape}")
        self.base = base
        self.image = base.copy() if target is None else target  # written in place
        self.mask = np.zeros(base.shape[:2], np.float32)
        self._unit = 257.0 if base.dtype == np.uint16 else 1.0  # 8-bit units -> image units
        self._max = float(np.iinfo(base.dtype).max)

    def paste(self, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> None:
        """Paste one crop: face (S, S, 3) float32 RGB 8-bit units, mask (S, S) float32, matrix image->crop (2, 3)."""
        region = crop_footprint(matrix, face.shape[0], self.base.shape)
        if region is None:
            return
        y0, y1, x0, x1 = region
        m = warp_from_crop(np.ascontiguousarray(mask, np.float32), matrix, region)
        wins = m > self.mask[y0:y1, x0:x1] + MASK_MARGIN
        if not wins.any():
            return
        f = warp_from_crop(np.ascontiguousarray(face, np.float32), matrix, region)[wins]
        if self.base.shape[2] == 1:
            f = (f @ _GRAY_WEIGHTS)[:, None]
        m = m[wins][:, None]
        b = self.base[y0:y1, x0:x1][wins].astype(np.float32)
        value = b * (1 - m) + f * np.float32(self._unit) * m
        self.image[y0:y1, x0:x1][wins] = np.clip(np.rint(value), 0, self._max).astype(self.base.dtype)
        self.mask[y0:y1, x0:x1][wins] = m[:, 0]
