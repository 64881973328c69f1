"""Detected faces and the choice of which ones to restore."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .options import SELECT_MODES


@dataclass(eq=False)  # identity equality: comparing numpy fields element-wise is ambiguous
class Face:
    """One detected face, in pixels of the image it was detected on.

    box: (4,) float32 x1,y1,x2,y2 (pixel edges; may extend past the image border).
    score: detector confidence in [0, 1].
    landmarks: (5,2) float32 (x,y): image-left eye, image-right eye, nose, mouth-left, mouth-right.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Shorter side of the box in px (the official GPEN code measures small faces this way)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        """Box area in px^2."""
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        """(2,) float32 (x, y) box centre in px."""
        return ((self.box[0:2] + self.box[2:4]) / 2).astype(np.float32)


def select_faces(
    faces: Sequence[Face],
    image_shape: tuple[int, ...],
    *,
    mode: str = "all",
    indices: Sequence[int] | None = None,
    min_size: float = 0,
    max_faces: int | None = None,
    score_threshold: float | None = None,
) -> list[Face]:
    """Choose the faces to restore.

    Steps, in order: ``indices`` pick positions in ``faces`` (the detect_faces order, left to right;
    negative counts from the end, out-of-range ones are ignored so one setting works on a batch of
    images); then faces under ``score_threshold`` or with ``size`` < ``min_size`` px are dropped;
    then ``mode``: "all" keeps them in input order, "largest" orders by box area (biggest first),
    "center" by distance of the box centre to the image centre (closest first). ``max_faces``
    caps the count: "all" keeps the largest ones (still in input order); "largest"/"center" keep
    only the first face unless ``max_faces`` says otherwise. image_shape: (H, W, ...) of the image.
    Returns the same Face objects, never copies.
    """
    if mode not in SELECT_MODES:
        raise ValueError(f"face selection mode must be one of {SELECT_MODES}, got {mode!r}")
    if max_faces is not None and max_faces < 0:
        raise ValueError(f"max_faces must be >= 0, got {max_faces}")
    chosen = list(faces)
    if indices is not None:
        n = len(chosen)
        chosen = [chosen[i] for i in dict.fromkeys(i % n for i in indices if -n <= i < n)]
    if score_threshold is not None:
        chosen = [f for f in chosen if f.score >= score_threshold]
    chosen = [f for f in chosen if f.size >= min_size]

    if mode == "all":
        if max_faces is not None and len(chosen) > max_faces:
            biggest = sorted(range(len(chosen)), key=lambda i: -chosen[i].area)[:max_faces]
            chosen = [chosen[i] for i in sorted(biggest)]
        return chosen
    if mode == "largest":
        chosen.sort(key=lambda f: -f.area)
    else:
        middle = np.array([image_shape[1], image_shape[0]], np.float32) / 2
        chosen.sort(key=lambda f: float(np.hypot(*(f.center - middle))))
    return chosen[: 1 if max_faces is None else max_faces]
