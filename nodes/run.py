"""The two things the nodes do: load a checkpoint and restore a batch, each one gpen_core call in ComfyUI's terms.

ComfyUI's IMAGE is a float32 tensor (B,H,W,C) RGB in [0,1] on the CPU; MASK is float32 (B,H,W) in [0,1].
Images cross to gpen_core as uint16 (H,W,C): exact for 8-bit sources, and pixels no face reaches come back unchanged.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Iterator

import numpy as np
import torch

import comfy.utils
from comfy import model_management

from .. import gpen_core
from ..gpen_core.devices import resolve_dtype
from ..gpen_core.pipeline import working_memory_bytes
from .paths import face_weight_dirs, model_path

FACE_BATCH = 4
"""Faces per network call; gpen_core halves it on out-of-memory."""

_loaded: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
"""Models still held by ComfyUI (its output cache), by (file, mtime, size, dtype): loaded once, reused."""


def load(model_name: str, dtype: str) -> gpen_core.GPENModel:
    """Load a checkpoint from the model folders onto ComfyUI's offload device; reuse it if already loaded."""
    path = model_path(model_name)
    stat = os.stat(path)
    torch_dtype = resolve_dtype(dtype)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, torch_dtype)
    model = _loaded.get(key)
    if model is None:
        model = gpen_core.load_model(path, device=model_management.unet_offload_device(), dtype=torch_dtype)
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


_Restored = tuple[np.ndarray, int, list[np.ndarray], np.ndarray]  # image, faces, restored crops, paste mask


def _images(image: torch.Tensor, gpen_model, progress: _FaceProgress, options: dict) -> Iterator[_Restored]:
    """Each image on its own (gpen_core.restore_faces)."""
    for frame in image:
        model_management.throw_exception_if_processing_interrupted()
        result = gpen_core.restore_faces(_to_uint16(frame), gpen_model, on_progress=progress.update, **options)
        crops = [face.restored for face in result.faces if face.restored is not None]
        yield result.image, result.n_faces, crops, result.mask


def _frames(image: torch.Tensor, gpen_model, progress: _FaceProgress, options: dict) -> Iterator[_Restored]:
    """The batch as consecutive frames of one video (gpen_core.restore_frames); progress counts frames."""
    frames = (_to_uint16(frame) for frame in image)
    for result in gpen_core.restore_frames(frames, gpen_model, keep_crops=True, **options):
        yield result.image, len(result.faces), result.crops, result.mask


def restore(image: torch.Tensor, gpen_model: gpen_core.GPENModel, *, detector: str, face_selection: str,
            min_face_size: int, alpha: float, mask: str, color_correction: bool, temporal_smoothing: bool = False,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Restore the faces of every image of an IMAGE batch; with ``temporal_smoothing`` the batch is consecutive video
    frames (gpen_core.video: faces tracked, landmarks smoothed).

    Returns (restored IMAGE (B,H,W,C), face crops IMAGE (N,S,S,3) with N the faces of the whole batch, or one black
    S x S image when there are none, MASK (B,H,W)), float32 in [0,1] on the CPU.
    """
    device = model_management.get_torch_device()
    work_bytes = working_memory_bytes(gpen_model.size, gpen_model.dtype)
    model_management.free_memory(model_management.module_size(gpen_model.net) + work_bytes, device)
    progress = _FaceProgress(len(image))
    search_dirs = face_weight_dirs()
    options = dict(detector=detector, select=face_selection, min_face_size=min_face_size, alpha=alpha, mask=mask,
                   color_correction=color_correction, batch_size=FACE_BATCH, search_dirs=search_dirs, device=device,
                   check_interrupt=model_management.throw_exception_if_processing_interrupted, on_oom=_on_oom)
    gpen_model.to(device)
    try:
        images, crops, masks = [], [], []
        for restored, n_faces, faces, paste_mask in (_frames if temporal_smoothing else _images)(
                image, gpen_model, progress, options):
            progress.image_done(n_faces)
            images.append(restored)
            crops += faces
            masks.append(paste_mask)
    finally:
        gpen_model.to(model_management.unet_offload_device())
    if not crops:
        crops = [np.zeros((gpen_model.size, gpen_model.size, 3), np.uint8)]
    return (torch.from_numpy(np.stack(images).astype(np.float32) / 65535.0),
            torch.from_numpy(np.stack(crops)).float() / 255.0,
            torch.from_numpy(np.stack(masks)))


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
