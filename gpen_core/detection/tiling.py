"""Where a detector looks: the resolution of the detection copy and the tiles it is cut into.

The official GPEN code detects on a copy whose long side is 1000 px when the image's exceeds 1500 px.
That keeps a normal photo's faces findable, but shrinks a 40000 x 100 strip to 1000 x 2.5 px and a
12000 x 2000 panorama to 1000 x 167 px, where no face survives. Here the copy keeps a short side of at
least ``MIN_SHORT_SIDE`` px (or the image's own), and a ``min_face_size`` asked for keeps such faces at
least ``smallest`` px in the copy. Copies with a side over ``TILE`` px are detected on overlapping tiles.
Normal photos (aspect ratio up to 2:1, no min_face_size) get exactly the official copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SIDE = 1500  # as the official GPEN code: images with a longer side ...
DETECT_SIDE = 1000  # ... are detected on a copy with this long side
MIN_SHORT_SIDE = 500  # ... but never one whose short side is shrunk below this (px)
TILE = 2048  # longest tile side in copy px; bounds the detector's memory
OVERLAP = 512  # tiles overlap by this many copy px (or the copy's short side, if smaller): faces up to it lie whole in a tile
EDGE = 2  # px: a box this close to a tile side shared with a neighbour may be a cut face


def detection_scale(height: int, width: int, min_face_size: float = 0, smallest: float = 12) -> float:
    """Scale (<= 1) of the detection copy of an H x W image.

    The official rule (long side > 1500 -> 1000), raised so that the copy's short side stays at least
    ``MIN_SHORT_SIDE`` px (or the image's), and so that faces of ``min_face_size`` input px (if > 0)
    are at least ``smallest`` px in the copy (the detector's own limit, 12 for MTCNN).
    """
    long_side, short_side = max(height, width), min(height, width)
    scale = DETECT_SIDE / long_side if long_side > MAX_SIDE else 1.0
    scale = max(scale, min(1.0, MIN_SHORT_SIDE / short_side))
    if min_face_size > 0:
        scale = max(scale, min(1.0, smallest / min_face_size))
    return scale


@dataclass(frozen=True)
class Tile:
    """A window of the detection copy: rows y0:y1, cols x0:x1 (end-exclusive), and which of its sides
    it shares with a neighbouring tile (faces cut there are found whole in the neighbour)."""

    y0: int
    y1: int
    x0: int
    x1: int
    inner: tuple[bool, bool, bool, bool]  # left, top, right, bottom


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [(round(i * step), round(i * step) + tile) for i in range(count)]


def tile_grid(height: int, width: int, tile: int = TILE, overlap: int | None = None) -> list[Tile]:
    """Overlapping tiles covering an H x W copy; one tile when both sides fit ``tile``.

    overlap: px shared by neighbours, default min(OVERLAP, short side + 2 * EDGE + 8), so a face that
    fits in it lies whole, away from the shared sides, in some tile.
    """
    if overlap is None:
        overlap = min(OVERLAP, min(height, width) + 2 * EDGE + 8)
    overlap = min(overlap, tile // 2)
    rows, cols = _spans(height, tile, overlap), _spans(width, tile, overlap)
    return [Tile(y0, y1, x0, x1, (x0 > 0, y0 > 0, x1 < width, y1 < height)) for y0, y1 in rows for x0, x1 in cols]


def cut_at_inner_side(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """(N,) bool: boxes (tile px) reaching within EDGE px of a side the tile shares with a neighbour."""
    h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
    left, top, right, bottom = tile.inner
    return ((left & (boxes[:, 0] < EDGE)) | (top & (boxes[:, 1] < EDGE))
            | (right & (boxes[:, 2] > w - EDGE)) | (bottom & (boxes[:, 3] > h - EDGE)))
