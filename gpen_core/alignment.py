"""Face alignment as GPEN does it: 5-point template, least-squares similarity, bilinear crop warps.

Points are (x, y) in pixels, pixel centres at integer coordinates (OpenCV convention). A transform is a
(2, 3) float64 matrix mapping image pixels to crop pixels: ``crop_xy = M[:, :2] @ image_xy + M[:, 2]``.
"""

from __future__ import annotations

import cv2
import numpy as np

# The classic 5-point face template (eyes, nose tip, mouth corners) on a 96x112 crop, which
# GPEN pads to a square, pads by 25% on every side and scales to the crop size.
_BASE_POINTS = np.array([
    [30.29459953, 51.69630051],
    [65.53179932, 51.50139999],
    [48.02519989, 71.73660278],
    [33.54930115, 92.3655014],
    [62.72990036, 92.20410156],
])
_BASE_SIZE = np.array([96.0, 112.0])  # (width, height)
_INNER_PADDING = 0.25

# A face box around the template, in 512-crop pixels (x1, y1, x2, y2): about what a detector
# reports for an aligned face. Only used when landmarks come without boxes.
_TEMPLATE_BOX_512 = np.array([128.0, 112.0, 384.0, 448.0])


def reference_points(size: int) -> np.ndarray:
    """GPEN's template for an S x S crop: (5, 2) float64 (x, y) crop pixels.

    Equals the official ``get_reference_facial_points((S, S), 0.25, (0, 0), True)``; at S = 512:
    (202.04, 242.88), (309.43, 242.29), (256.08, 303.96), (211.96, 366.83), (300.89, 366.34).
    """
    square = _BASE_SIZE.max()
    points = _BASE_POINTS + (square - _BASE_SIZE) / 2  # centre the 96x112 crop in a 112x112 square
    pad = square * _INNER_PADDING
    return (points + pad) * (size / (square + 2 * pad))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking src points to dst.

    Umeyama (PAMI 1991) without reflections. src, dst: (K, 2) (x, y), K >= 2.
    Returns the (2, 3) float64 matrix M with dst ~= M[:, :2] @ src + M[:, 2].
    Raises ValueError when src points all coincide.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if not np.isfinite(src_var) or src_var < 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide or are not finite)")
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (sigma * signs).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def alignment_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) float64 image->crop transform placing 5 landmarks (x, y image px) on the S x S template."""
    return similarity_transform(landmarks, reference_points(size))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points; returns float64."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, (2, 3) float64."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned S x S crop out of an HWC (or HW) image, any OpenCV dtype, channel order kept.

    Bilinear, constant black outside the image, as the official ``warp_and_crop_face``.
    """
    return cv2.warpAffine(image, np.asarray(matrix, np.float64), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_footprint(matrix: np.ndarray, size: int, image_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Image rows/cols (y0, y1, x0, x1), end-exclusive, that an S x S crop covers when warped back.

    Pixels outside it get nothing from the crop (the warp's black border), so paste-back can stay
    inside it. None when the crop falls outside the image.
    """
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    xy = transform_points(invert_transform(matrix), corners)
    height, width = image_shape[:2]
    x0, y0 = np.floor(xy.min(0)).astype(int) - 1
    x1, y1 = np.ceil(xy.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def warp_from_crop(crop: np.ndarray, matrix: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """Warp a crop (S, S[, C], any OpenCV dtype) back onto the image rows/cols ``region`` = (y0, y1, x0, x1).

    ``matrix`` is the image->crop transform used to cut the crop; bilinear, zero outside the crop.
    Same values as warping onto the whole image and slicing ``region``.
    """
    y0, y1, x0, x1 = region
    # Sample the crop at M @ (x + x0, y + y0) for each region pixel (x, y).
    shifted = np.asarray(matrix, np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(crop, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def estimate_face_box(landmarks: np.ndarray) -> np.ndarray:
    """A detector-like face box (4,) float32 x1, y1, x2, y2 image px, from 5 landmarks alone."""
    matrix = alignment_transform(landmarks, 512)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    centre = transform_points(invert_transform(matrix), (_TEMPLATE_BOX_512[:2] + _TEMPLATE_BOX_512[2:]) / 2)
    half = (_TEMPLATE_BOX_512[2:] - _TEMPLATE_BOX_512[:2]) / 2 / scale
    return np.concatenate([centre - half, centre + half]).astype(np.float32)
