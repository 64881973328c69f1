"""The two things the nodes do: load a checkpoint and restore a batch, each one gpen_core call in ComfyUI's terms.

ComfyUI's IMAGE is a float32 tensor (B,H,W,C) RGB in [0,1] on the CPU; MASK is float32 (B,H,W) in [0,1].
Images cross to gpen_core as uint16 (H,W,C): exact for 8-bit sources, and pixels no face reaches come back unchanged.
"""
from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator

import numpy as np
import torch

import comfy.utils
from comfy import model_management

from .. import gpen_core
from ..gpen_core.devices import compute_dtype, resolve_dtype
from ..gpen_core.download import with_download_command
from ..gpen_core.network import batches_faces
from ..gpen_core.pipeline import working_memory_bytes
from ..gpen_core.upscale import tile_memory_bytes
from .paths import download_folder, face_weight_dirs, model_path

FACE_BATCH = 4
"""Faces aligned and masked together; gpen_core halves it on out-of-memory."""
UPSCALE_TILE = 512
"""Tile side (input px) whose working memory is freed before a run with an upscale model; gpen_core then picks the
tile from the free memory, and halves it on out-of-memory."""

log = logging.getLogger("comfyui-gpen")

_loaded: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
"""Models still held by ComfyUI (its output cache), by (file, mtime, size, dtype): loaded once, reused."""


def load(model_name: str, dtype: str) -> gpen_core.GPENModel:
    """Load a checkpoint from the model folders onto ComfyUI's offload device; reuse it if already loaded.
    A file that does not load raises gpen_core's error, its download advice turned into a command for ComfyUI."""
    path = model_path(model_name)
    stat = os.stat(path)
    torch_dtype = resolve_dtype(dtype)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, torch_dtype)
    model = _loaded.get(key)
    if model is None:
        try:
            model = gpen_core.load_model(path, device=model_management.unet_offload_device(), dtype=torch_dtype)
        except gpen_core.GPENError as exc:
            raise type(exc)(with_download_command(str(exc), download_folder())) from None
        _loaded[key] = model
    return model


class _FaceProgress:
    """ComfyUI progress bar over the faces of a whole batch; the total becomes exact as images are searched.

    An image not searched yet counts as one face.
    """

    def __init__(self, n_images: int):
        self.bar = comfy.utils.ProgressBar(n_images)
        self.done = 0
        self.unsearched = n_images

    def update(self, done: int, total: int) -> None:
        """gpen_core's on_progress for the current image: ``done`` of its ``total`` faces restored."""
        self.bar.update_absolute(self.done + done, self.done + total + self.unsearched - 1)

    def image_done(self, n_faces: int) -> None:
        self.done += n_faces
        self.unsearched -= 1
        self.bar.update_absolute(self.done, max(self.done + self.unsearched, 1))


def _on_oom() -> None:
    """Out of memory mid-batch: drop the cached detection/parsing networks too (ComfyUI's memory manager does not
    know them), then let ComfyUI empty its cache. Not done after every run: they are small (~200 MB together) and
    would be read from disk again for each run."""
    gpen_core.release_face_models()
    model_management.soft_empty_cache()


def _to_uint16(frame: torch.Tensor) -> np.ndarray:
    """(H,W,C) float in [0,1] -> (H,W,C) uint16 numpy."""
    return np.rint(frame.float().clamp(0, 1).cpu().numpy() * 65535.0).astype(np.uint16)


_Restored = tuple[np.ndarray, int, int, list[np.ndarray], np.ndarray, "float | None"]
"""One image: restored image, faces found, faces processed, restored crops, paste mask, seconds (None: not timed)."""


def _images(image: torch.Tensor, gpen_model, progress: _FaceProgress, options: dict) -> Iterator[_Restored]:
    """Each image on its own (gpen_core.restore_faces)."""
    for frame in image:
        model_management.throw_exception_if_processing_interrupted()
        result = gpen_core.restore_faces(_to_uint16(frame), gpen_model, on_progress=progress.update, **options)
        crops = [face.restored for face in result.faces if face.restored is not None]
        yield result.image, result.n_detected, result.n_faces, crops, result.mask, result.timings.get("total")


def _frames(image: torch.Tensor, gpen_model, progress: _FaceProgress, options: dict) -> Iterator[_Restored]:
    """The batch as consecutive frames of one video (gpen_core.restore_frames); progress counts frames."""
    frames = (_to_uint16(frame) for frame in image)
    for result in gpen_core.restore_frames(frames, gpen_model, keep_crops=True, **options):
        yield result.image, len(result.faces), len(result.faces), result.crops, result.mask, None


def restore(image: torch.Tensor, gpen_model: gpen_core.GPENModel, *, detector: str, face_selection: str,
            min_face_size: int, alpha: float, mask: str, color_correction: bool, temporal_smoothing: bool = False,
            upscale_model=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, str]:
    """Restore the faces of every image of an IMAGE batch; with ``temporal_smoothing`` the batch is consecutive video
    frames (gpen_core.video: faces tracked, landmarks smoothed); each image is upscaled first by ``upscale_model``
    (ComfyUI's UPSCALE_MODEL, a spandrel ImageModelDescriptor) when given.

    Returns (restored IMAGE (B,H',W',C), face crops IMAGE (N,S,S,3) with N the faces of the whole batch, or one black
    S x S image when there are none, MASK (B,H',W')) float32 in [0,1] on the CPU, then N, and a text saying per image
    how many faces were found and restored and which crops of the face crops came from it (one line per image);
    H',W' = H,W times the upscale.
    """
    device = model_management.get_torch_device()
    batch = FACE_BATCH if batches_faces(device) else 1  # faces in one forward
    need = model_management.module_size(gpen_model.net) + working_memory_bytes(gpen_model.size, gpen_model.dtype, batch)
    if upscale_model is not None:
        need += model_management.module_size(upscale_model.model) + tile_memory_bytes(upscale_model, UPSCALE_TILE)
    model_management.free_memory(need, device)
    progress = _FaceProgress(len(image))
    search_dirs = face_weight_dirs()
    options = dict(detector=detector, select=face_selection, min_face_size=min_face_size, alpha=alpha, mask=mask,
                   color_correction=color_correction, batch_size=FACE_BATCH, search_dirs=search_dirs, device=device,
                   check_interrupt=model_management.throw_exception_if_processing_interrupted, on_oom=_on_oom,
                   upscaler=upscale_model, on_upscale_progress=progress.bar.update_absolute)
    gpen_model.to(device)
    if upscale_model is not None:
        upscale_model.to(device)
    computed = compute_dtype(gpen_model.dtype, device, warn=False)
    if computed != gpen_model.dtype:  # gpen_core's policy (devices.compute_dtype): fp16 on the CPU computes in fp32
        log.warning("GPEN Restore Faces: the model is %s, 10-12x slower than fp32 on %s, so it computes in %s there; "
                    "choose fp32 (or auto) in Load GPEN Model for CPU runs.", gpen_model.dtype, device, computed)
    try:
        lines, images, crops, masks = [], [], [], []
        for restored, n_found, n_done, faces, paste_mask, seconds in (_frames if temporal_smoothing else _images)(
                image, gpen_model, progress, options):
            progress.image_done(n_done)
            lines.append(_describe(len(images), len(image), n_found, len(faces), len(crops), seconds))
            log.info("GPEN Restore Faces: %s", lines[-1])
            images.append(restored)
            crops += faces
            masks.append(paste_mask)
    finally:
        gpen_model.to(model_management.unet_offload_device())
        if upscale_model is not None:
            upscale_model.to(model_management.unet_offload_device())
    n_restored = len(crops)
    if not crops:
        crops = [np.zeros((gpen_model.size, gpen_model.size, 3), np.uint8)]
    return (torch.from_numpy(np.stack(images).astype(np.float32) / 65535.0),
            torch.from_numpy(np.stack(crops)).float() / 255.0,
            torch.from_numpy(np.stack(masks)),
            n_restored, "\n".join(lines))


def _describe(index: int, n_images: int, n_found: int, n_restored: int, first_crop: int, seconds: float | None) -> str:
    """One line about one image of the batch, e.g. 'image 3 of 3 (batch index 2): 4 faces restored of 4 found ->
    restored_faces 1-4, 9.1 s'; first_crop: where this image's crops start in restored_faces."""
    text = (f"image {index + 1} of {n_images} (batch index {index}): {n_restored} face{'s' * (n_restored != 1)} "
            f"restored of {n_found} found")
    if n_restored:
        last = first_crop + n_restored - 1
        text += f" -> restored_faces {first_crop}" + (f"-{last}" if last > first_crop else "")
    return text + (f", {seconds:.1f} s" if seconds is not None else "")


def aligned(image: torch.Tensor, gpen_model: gpen_core.GPENModel, *, task: str,
            mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
    """GPEN on aligned face crops (no detection): IMAGE (B,H,W,C) in, IMAGE (B,H,W,3) out, float32 [0,1] on the
    CPU; ``mask`` (1 or B, H, W) marks the missing regions for inpainting."""
    device = model_management.get_torch_device()
    work_bytes = working_memory_bytes(gpen_model.size, gpen_model.dtype)
    model_management.free_memory(model_management.module_size(gpen_model.net) + work_bytes, device)
    faces = [np.rint(frame[..., :3].float().clamp(0, 1).cpu().numpy() * 255.0).astype(np.uint8) for frame in image]
    masks = None if mask is None else list(mask.float().cpu().numpy())
    bar = comfy.utils.ProgressBar(len(faces))
    gpen_model.to(device)
    try:
        out = gpen_core.process_aligned(
            faces, gpen_model, task=task, masks=masks, batch_size=FACE_BATCH,
            on_progress=lambda done, total: bar.update_absolute(done, total),
            check_interrupt=model_management.throw_exception_if_processing_interrupted)
    finally:
        gpen_model.to(model_management.unet_offload_device())
    return (torch.from_numpy(np.stack(out)).float() / 255.0,)
