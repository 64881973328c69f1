"""The four official GPEN tasks, one network layout: face restoration, colorization, inpainting, seg2face.

Every official GPEN file is a ``FullGenerator``; what it was trained for is known only from its official name
(GPEN-BFR-*, GPEN-Colorization-1024, GPEN-Inpainting-1024, GPEN-Seg2face-512), not from its tensors. So the task
comes from the file name or is given explicitly; an explicit task that contradicts an official name is refused.
Official pre/post-processing (yangxy/GPEN ``face_gan.py``, ``face_colorization.py``, ``demo.py``):

* restore, colorize, inpaint: pixels x/255 mapped to [-1, 1] in, the output mapped back (``is_norm=True``);
* seg2face: x/255 in [0, 1] in, output clamped to [0, 1] (``is_norm=False``);
* colorize: a grey face in; where the face's size differs from S the output, resized back, keeps the input's
  luminance (Y of YUV) and takes only the colour (U, V) from the network;
* inpaint: the missing regions painted white (255) in; here a mask marks them and is painted for you.

All images here are uint8 RGB (H, W, 3), or (H, W) grey where noted; masks are (H, W), > 0.5 = missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError, TaskError
from .options import TASK_CHOICES


@dataclass(frozen=True)
class Task:
    """One GPEN task: its name, the official file-name stem, and whether pixels are mapped to [-1, 1]."""

    name: str
    official: str
    normalized: bool
    summary: str


TASKS = {
    "restore": Task("restore", "GPEN-BFR", True, "restores degraded faces"),
    "colorize": Task("colorize", "GPEN-Colorization", True, "colours grey faces"),
    "inpaint": Task("inpaint", "GPEN-Inpainting", True, "fills the white (masked) regions of faces"),
    "seg2face": Task("seg2face", "GPEN-Seg2face", False, "draws a face from a colour-coded face-parsing map"),
}
#: Official names (and facefusion's gpen_bfr_*), any case, "-" or "_".
_NAME_PATTERNS = {
    "restore": r"gpen[-_]bfr",
    "colorize": r"gpen[-_]colori[sz]ation",
    "inpaint": r"gpen[-_]inpainting",
    "seg2face": r"gpen[-_]seg2face",
}


def task_from_name(path: str | Path | None) -> Task | None:
    """The task an official file name says (GPEN-Seg2face-512.pth -> seg2face), or None for other names."""
    if path is None:
        return None
    name = Path(path).name.lower()
    for task, pattern in _NAME_PATTERNS.items():
        if re.search(pattern, name):
            return TASKS[task]
    return None


def resolve_task(path: str | Path | None, task: str | None = None) -> Task:
    """The task to run a model file with: ``task`` when given (None or "auto": the file name's, else restore).

    Raises TaskError for an unknown task name, or one that contradicts an official file name. A file with
    another name is taken at its word: restoration, colorization, inpainting and seg2face files have the same
    tensors, so only the name can tell them apart.
    """
    named = task_from_name(path)
    if task in (None, "auto"):
        return named or TASKS["restore"]
    if task not in TASKS:
        raise TaskError(f"unknown GPEN task {task!r}: use one of {', '.join(TASK_CHOICES)}")
    chosen = TASKS[task]
    if named is not None and named != chosen:
        raise TaskError(
            f"{Path(path).name} is the official {named.official} model, which {named.summary}; it cannot {task}. "
            f"Use a {chosen.official} file for task {task}, or task auto/{named.name} with this one.")
    return chosen


def require_restoration(path: str | Path | None) -> None:
    """TaskError when an official file name says the model is not a face-restoration one (photo pipeline)."""
    named = task_from_name(path)
    if named is not None and named.name != "restore":
        raise TaskError(
            f"{Path(path).name} {named.summary}: it works on aligned face crops, not on whole photos. Use "
            f"gpen_core.process_aligned (command line: restore --aligned; ComfyUI: GPEN Aligned Faces).")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from uint8 (H, W), (H, W, 1) or (H, W, 3); ImageError otherwise."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"aligned faces must be uint8, got {image.dtype}; convert to 8-bit RGB first")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ImageError(f"an aligned face must be (H, W) grey or (H, W, 3) RGB, got shape {image.shape}")
    return image


def paint_missing(face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inpainting input: ``face`` (H, W, 3) uint8 RGB with the pixels where ``mask`` (H, W) > 0.5 set to white."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.shape != face.shape[:2]:
        raise ImageError(f"the inpainting mask is {mask.shape} but the face is {face.shape[:2]} (H, W); give a "
                         f"mask of the face's size")
    painted = face.copy()
    painted[np.asarray(mask, np.float32) > 0.5] = 255
    return painted


def keep_luminance(source: np.ndarray, coloured: np.ndarray) -> np.ndarray:
    """Colorization result: Y (BT.601 YUV) of ``source``, U and V of ``coloured``; both (H, W, 3) uint8 RGB."""
    yuv = cv2.cvtColor(coloured, cv2.COLOR_RGB2YUV)
    yuv[..., 0] = cv2.cvtColor(source, cv2.COLOR_RGB2YUV)[..., 0]
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
