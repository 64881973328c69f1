"""Face detection: the embedded MTCNN, or RetinaFace through facexlib when its weights are on disk."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import FaceDetectorError, ImageError
from ..faces import Face
from ..model_paths import FACEXLIB_FILES, facexlib_weight_dirs, find_facexlib_weights
from ..options import DETECTORS
from .mtcnn import MTCNN
from .retinaface import detect_retinaface, load_retinaface

DEFAULT_SCORE = {"mtcnn": 0.95, "retinaface": 0.9}  # retinaface: the official GPEN threshold
MAX_SIDE = 1500  # as the official GPEN code: images with a longer side ...
DETECT_SIDE = 1000  # ... are detected on a copy with this long side


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


def detect_faces(
    image: np.ndarray,
    detector: str = "auto",
    *,
    device: torch.device | str | None = None,
    search_dirs: Sequence[str | os.PathLike] = (),
    weights_path: str | os.PathLike | None = None,
    score_threshold: float | None = None,
    min_face_size: float = 20,
) -> list[Face]:
    """Faces in an image, ordered left to right (box x1, then y1).

    image: uint8 RGB HxWx3 (gray, RGBA and uint16 are converted). detector: "auto" | "mtcnn" |
    "retinaface" (see ``resolve_detector``); weights_path: a RetinaFace file or folder to use first.
    device: None picks CUDA when available. score_threshold: None uses the detector's default
    (MTCNN 0.95, RetinaFace 0.9). min_face_size: px in the input image; faces whose box's shorter side
    is below it are dropped (MTCNN cannot see faces under 12 px of the detection copy).
    Images whose long side exceeds 1500 px are detected on a copy with long side 1000 px, as the
    official GPEN code does; boxes and landmarks are mapped back to input pixels.
    """
    rgb = as_rgb8(image)
    name, path = resolve_detector(detector, search_dirs, weights_path)
    threshold = DEFAULT_SCORE[name] if score_threshold is None else score_threshold
    dev = _device(device)

    ratio = 1.0
    if max(rgb.shape[:2]) > MAX_SIDE:
        ratio = DETECT_SIDE / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_AREA)
    if name == "mtcnn":
        boxes, scores, landmarks = get_mtcnn(str(dev)).detect(rgb, min_face_size=min_face_size * ratio)
    else:
        net = load_retinaface(str(path.resolve()), str(dev))
        boxes, scores, landmarks = detect_retinaface(net, rgb, threshold)

    faces = [Face(b / ratio, float(s), lm / ratio) for b, s, lm in zip(boxes, scores, landmarks, strict=True)
             if s >= threshold]
    faces = [f for f in faces if f.size >= min_face_size]
    return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
