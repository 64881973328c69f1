"""Already aligned face crops in, processed crops out (official ``--aligned``), for every GPEN task.

For FFHQ-style crops, the face crops another tool wrote, colorization, inpainting and seg2face inputs: no
detection and no paste-back. Each crop is resized to the model's size S (bilinear, as the official), run
through the network with its task's pre/post-processing (:mod:`gpen_core.tasks`), and resized back to its
own size (bilinear). Crops of any size and aspect go in; each comes back with its own (H, W).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from .alignment import reference_points
from .errors import ImageError
from .faces import Face
from .pipeline import RestoredFace, RestoreResult
from .tasks import Task, as_rgb, keep_luminance, paint_missing, resolve_task


@torch.inference_mode()
def run_network(model, crops: np.ndarray, normalized: bool = True) -> np.ndarray:
    """(B, S, S, 3) uint8 RGB -> (B, S, S, 3) uint8 RGB through ``model.net``, on its device, in its compute_dtype.

    ``normalized``: pixels x/255 mapped to [-1, 1] and back (``is_norm=True``); else x/255 in [0, 1] and the
    output clamped to [0, 1] (seg2face). Output rounded to the nearest grey level.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(model.device).permute(0, 3, 1, 2).float() / 255.0
    if normalized:
        x = (x - 0.5) / 0.5
    y = model.net(x.to(model.compute_dtype)).float()  # fp16 weights on a CPU compute in fp32
    if normalized:
        y = y * 0.5 + 0.5
    return y.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _prepare(task: Task, face: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    face = as_rgb(face)
    if mask is not None:
        if task.name != "inpaint":
            raise ImageError(f"a mask is only used for inpainting, not for task {task.name}; leave it out")
        face = paint_missing(face, mask)
    return face


def process_aligned(
    faces: Sequence[np.ndarray] | np.ndarray,
    model,
    *,
    task: str | None = None,
    masks: Sequence[np.ndarray | None] | np.ndarray | None = None,
    batch_size: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """Run GPEN on aligned face crops and return each crop's result at its own size.

    faces: a sequence of uint8 (H, W, 3) RGB or (H, W) grey crops, any sizes, or one (N, H, W, 3) array; the
    face must fill the crop as GPEN's alignment template does (FFHQ-style). model: a GPENModel or ONNXModel.
    task: None/"auto" (from the model's file name, restore for other names), "restore", "colorize", "inpaint",
    "seg2face" (see :mod:`gpen_core.tasks`; a task contradicting an official file name raises TaskError).
    masks: inpainting only: per face an (H, W) mask (bool, uint8 or float; > 0.5 = missing, painted white
    before the network) or None (the face already has white holes); one mask for all faces is allowed.
    batch_size: crops per network call. on_progress(done, total) after each batch; check_interrupt() before.
    Returns a list of (H, W, 3) uint8 RGB arrays, in input order.
    """
    resolved = resolve_task(getattr(model, "path", None), task)
    faces = list(faces)
    if masks is None:
        masks = [None] * len(faces)
    elif isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks] * len(faces)
    masks = list(masks)
    if len(masks) == 1 and len(faces) > 1:
        masks = masks * len(faces)
    if len(masks) != len(faces):
        raise ImageError(f"{len(masks)} masks for {len(faces)} faces; give one mask per face, or one for all")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = int(model.size)
    results: list[np.ndarray] = []
    for start in range(0, len(faces), batch_size):
        if check_interrupt is not None:
            check_interrupt()
        sources = [_prepare(resolved, f, m) for f, m in zip(faces[start:start + batch_size],
                                                              masks[start:start + batch_size], strict=True)]
        batch = np.stack([_resize(face, size, size) for face in sources])
        outputs = run_network(model, batch, resolved.normalized)
        for source, out in zip(sources, outputs, strict=True):
            back = _resize(out, *source.shape[:2])
            if resolved.name == "colorize" and source.shape[:2] != (size, size):
                back = keep_luminance(source, back)
            results.append(back)
        if on_progress is not None:
            on_progress(len(results), len(faces))
    return results


def restore_aligned_image(image: np.ndarray, model, *, task: str | None = None, keep_crops: bool = True,
                          on_progress: Callable[[int, int], None] | None = None) -> RestoreResult:
    """One image file's frame that is itself an aligned face, as a :class:`RestoreResult` (the command line's
    ``restore --aligned``): the whole frame is the face, processed by :func:`process_aligned`.

    image: uint8 or uint16; (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA (alpha kept). The result image is
    (H, W, 3) RGB (RGBA with the input's alpha), the input's dtype; its one face has the whole frame as box
    and GPEN's template landmarks scaled to (W, H).
    """
    started = time.perf_counter()
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
        raise ImageError(f"an aligned face image must be uint8/uint16 (H, W[, C]), got {image.dtype} {image.shape}")
    alpha = image[..., 3:] if image.ndim == 3 and image.shape[2] == 4 else None
    colour = image[..., :3] if alpha is not None else image
    face8 = np.rint(colour / 257.0).astype(np.uint8) if colour.dtype == np.uint16 else colour
    face8 = as_rgb(face8)
    out, = process_aligned([face8], model, task=task)
    if on_progress is not None:
        on_progress(1, 1)
    result = out.astype(np.uint16) * 257 if image.dtype == np.uint16 else out
    if alpha is not None:
        result = np.concatenate([result, alpha], axis=2)
    height, width = face8.shape[:2]
    size = float(model.size)
    landmarks = (reference_points(int(model.size)) * (width / size, height / size)).astype(np.float32)
    face = Face(box=np.array([0, 0, width, height], np.float32), score=1.0, landmarks=landmarks)
    restored = RestoredFace(face, face8 if keep_crops else None, out if keep_crops else None, index=0)
    return RestoreResult(result, [restored], np.ones((height, width), np.float32),
                         {"network": time.perf_counter() - started, "total": time.perf_counter() - started},
                         mask_kind="none", n_detected=1, n_selected=1)
