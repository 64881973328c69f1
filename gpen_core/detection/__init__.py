"""Face detection: the embedded MTCNN, or RetinaFace through facexlib when its weights are on disk."""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import FaceDetectorError, ImageError
from ..faces import Face
from ..model_paths import FACEXLIB_FILES, facexlib_weight_dirs, find_facexlib_weights
from ..options import DETECTORS
from .mtcnn import CELL, MTCNN, nms
from .mtcnn import WEIGHTS as MTCNN_WEIGHTS
from .retinaface import detect_retinaface, load_retinaface
from .tiling import OVERLAP, cut_at_inner_side, detection_scale, tile_grid

# MTCNN: its last stage's own threshold (false positives are caught by its support rule, see mtcnn.py;
# a 0.95 cut dropped a clearly visible Solvay face whose O-Net score swings 0.80-0.96 with the window).
DEFAULT_SCORE = {"mtcnn": 0.7, "retinaface": 0.9}  # retinaface: the official GPEN threshold
DEFAULT_FLOOR = 20.0  # px of the detection copy: MTCNN's smallest face when no min_face_size asks for less


@functools.lru_cache(maxsize=4)
def get_mtcnn(device: str) -> MTCNN:
    """The embedded MTCNN on ``device``, loaded once per device."""
    return MTCNN(device)


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """uint8 RGB HxWx3 view/copy of a uint8/uint16 gray (HxW, HxWx1), RGB or RGBA image."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype not in (np.uint8, np.uint16):
        raise ImageError("image must be a uint8/uint16 numpy array HxW or HxWxC "
                         f"(got {type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels not in (1, 3, 4):
        raise ImageError(f"image must have 1, 3 or 4 channels, got {channels}")
    return np.repeat(image, 3, axis=2) if channels == 1 else np.ascontiguousarray(image[..., :3])


def resolve_detector(
    detector: str, search_dirs: Sequence[str | os.PathLike] = (), weights_path: str | os.PathLike | None = None
) -> tuple[str, Path | None]:
    """("mtcnn", None) or ("retinaface", weights file) for a detector name.

    "auto" takes RetinaFace when its weights are found and facexlib is installed, else MTCNN.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if detector == "mtcnn":
        return "mtcnn", None
    path = find_facexlib_weights("detection", search_dirs=search_dirs, explicit=weights_path)
    if detector == "auto":
        usable = path is not None and importlib.util.find_spec("facexlib") is not None
        return ("retinaface", path) if usable else ("mtcnn", None)
    if path is None:
        folders = "\n  ".join(str(d) for d in facexlib_weight_dirs(search_dirs))
        raise FaceDetectorError(
            f"RetinaFace weights not found. Put {' or '.join(FACEXLIB_FILES['detection'])} in one of:\n  "
            f"{folders}\nor name the file with GPEN_DETECTION_WEIGHTS, or use detector='mtcnn' "
            "(built in, no download)."
        )
    return "retinaface", path


Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N,4), scores (N,), landmarks (N,5,2), float32


def _detect(name: str, path: Path | None, device: torch.device, rgb: np.ndarray, floor: float,
            threshold: float) -> Detections:
    """One detector run on a uint8 RGB HxWx3 image; px of that image. floor: MTCNN's pyramid floor, px."""
    if name == "mtcnn":
        return get_mtcnn(str(device)).detect(rgb, min_face_size=floor)
    return detect_retinaface(load_retinaface(str(path.resolve()), str(device)), rgb, threshold)


def _finite(found: Detections, name: str, path: Path | None) -> Detections:
    """Drop detections with NaN/inf values, warning; FaceDetectorError when every detection is one."""
    boxes, scores, landmarks = found
    ok = np.isfinite(boxes).all(1) & np.isfinite(scores) & np.isfinite(landmarks).all((1, 2))
    if ok.all():
        return found
    weights = str(path) if path is not None else str(MTCNN_WEIGHTS)
    fix = ("delete it and download it again, or use detector='mtcnn'" if name == "retinaface"
           else "reinstall gpen_core")
    if not ok.any():
        raise FaceDetectorError(
            f"the {name} detector returned only NaN/inf values ({len(ok)} detections): its weights file "
            f"{weights} is probably damaged; {fix}")
    warnings.warn(f"dropped {int((~ok).sum())} of {len(ok)} face detections with NaN/inf values: the {name} "
                  f"weights file {weights} is probably damaged; {fix}", RuntimeWarning, stacklevel=3)
    return boxes[ok], scores[ok], landmarks[ok]


def _detect_tiled(name: str, path: Path | None, device: torch.device, rgb: np.ndarray, scale: float,
                  floor: float, threshold: float) -> Detections:
    """Detections on the copy of ``rgb`` at ``scale``, tile by tile, in px of ``rgb``."""
    if scale != 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        copy = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        scale_xy = np.array([size[0] / rgb.shape[1], size[1] / rgb.shape[0]], np.float32)
    else:
        copy, scale_xy = rgb, np.ones(2, np.float32)
    parts = []
    tiles = tile_grid(*copy.shape[:2])
    for tile in tiles:
        window = copy[tile.y0:tile.y1, tile.x0:tile.x1]
        boxes, scores, landmarks = _finite(_detect(name, path, device, window, floor, threshold), name, path)
        if len(tiles) > 1:
            whole = ~cut_at_inner_side(boxes, tile)
            boxes, scores, landmarks = boxes[whole], scores[whole], landmarks[whole]
        offset = np.array([tile.x0, tile.y0], np.float32)
        parts.append((((boxes.reshape(-1, 2, 2) + offset) / scale_xy).reshape(-1, 4), scores,
                      (landmarks + offset) / scale_xy))
    return tuple(np.concatenate(p).astype(np.float32) for p in zip(*parts, strict=True))


def detect_faces(
    image: np.ndarray,
    detector: str = "auto",
    *,
    device: torch.device | str | None = None,
    search_dirs: Sequence[str | os.PathLike] = (),
    weights_path: str | os.PathLike | None = None,
    score_threshold: float | None = None,
    min_face_size: float = 0,
) -> list[Face]:
    """Faces in an image, ordered left to right (box x1, then y1).

    image: uint8 RGB HxWx3 (gray, RGBA and uint16 are converted). detector: "auto" | "mtcnn" |
    "retinaface" (see ``resolve_detector``); weights_path: a RetinaFace file or folder to use first.
    device: None picks CUDA when available. score_threshold: None uses the detector's default
    (MTCNN 0.7, its last stage's own threshold; RetinaFace 0.9, the official GPEN one).
    min_face_size: px in the input image; faces whose box's shorter side is below it are dropped.
    0 keeps every face the detector finds: MTCNN then searches down to 20 px of the detection copy
    (``DEFAULT_FLOOR``); a smaller min_face_size (down to 12 px of the copy, enlarging the copy if
    needed) finds smaller faces, at a cost in time.
    Detection copy: as the official GPEN code, images whose long side exceeds 1500 px are detected on a
    copy with long side 1000 px, except that the copy keeps a short side of at least 500 px (very wide
    or tall images) and faces of min_face_size stay findable; copies wider or taller than 2048 px are
    detected on overlapping tiles (see ``tiling``). Boxes and landmarks are in input pixels.
    Detections with NaN/inf values (a damaged weights file) are dropped with a RuntimeWarning;
    FaceDetectorError when every detection is so.
    """
    rgb = as_rgb8(image)
    name, path = resolve_detector(detector, search_dirs, weights_path)
    threshold = DEFAULT_SCORE[name] if score_threshold is None else score_threshold
    dev = _device(device)

    height, width = rgb.shape[:2]
    scale = detection_scale(height, width, min_face_size, smallest=CELL)
    floor = DEFAULT_FLOOR if min_face_size <= 0 else min(DEFAULT_FLOOR, max(CELL, min_face_size * scale))
    found = [_detect_tiled(name, path, dev, rgb, scale, floor, threshold)]
    coarse = detection_scale(height, width)
    if coarse < scale and min(height, width) * scale > OVERLAP:  # faces too big for the tiles' overlap
        found.append(_detect_tiled(name, path, dev, rgb, coarse, DEFAULT_FLOOR, threshold))
    boxes, scores, landmarks = (np.concatenate(p) for p in zip(*found, strict=True))
    if len(found) > 1 or len(tile_grid(round(height * scale), round(width * scale))) > 1:
        keep = nms(boxes, scores, 0.5)  # the same face from two tiles or two passes
        boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]

    faces = [Face(b, float(s), lm) for b, s, lm in zip(boxes, scores, landmarks, strict=True) if s >= threshold]
    faces = [f for f in faces if f.size >= min_face_size]
    return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
