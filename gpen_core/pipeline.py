"""restore_faces(): photo in, the same photo with its faces restored out (GPEN's official pipeline).

Data flow: image -> faces (landmarks) -> aligned crops -> restored crops -> masks -> composite.
Faces go through the network in batches and each batch is pasted at once into a running composite,
so memory is bounded by the image size and the batch size, not by the number of faces.

16-bit images: the network sees 8-bit crops, but the aligned input crop (for ``alpha``) is cut at
16-bit precision and the composite is computed at 16 bits; pixels no face reaches stay bit-exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .alignment import alignment_transform, estimate_face_box, warp_to_crop
from .blending import SMALL_FACE_PX, Compositor, match_colour, mix, soften_small_face
from .device_path import DeviceFrame, device_mask_fn, finish_face
from .errors import ImageError
from .faces import Face, select_faces
from .masks import make_mask_fn
from .network import batches_faces
from .tasks import require_restoration

# torch >= 2.5 names it torch.OutOfMemoryError (same class as torch.cuda.OutOfMemoryError).
_OOM_ERROR = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# Peak working memory of the network per crop pixel and face, in activation values: ~780 MB measured for one
# 512 x 512 crop in fp32 on CPU (3072 bytes/px); a batch run in one forward needs it per face.
_WORK_VALUES_PER_PIXEL = 768


@dataclass
class RestoredFace:
    """One face: the detection (``face``: box, score, landmarks in image px) and its S x S crops,
    (S, S, 3) uint8 RGB, or None when crops were not kept (``keep_crops=False``, or not restored).
    ``index``: its position among all faces found (left to right), the number ``face_indices`` uses."""
    face: Face
    aligned: np.ndarray | None = None
    restored: np.ndarray | None = None
    index: int = 0


@dataclass
class RestoreResult:
    """Output of restore_faces.

    image: same shape, dtype and channels as the input (gray stays gray, RGBA keeps its alpha untouched).
    mask: (H, W) float32 in [0, 1], how much of each pixel comes from a restored face.
    timings: seconds per stage: detect, align, network, mask, paste, total.
    mask_kind: the paste mask used: "parsing", "rectangle", or "none" when nothing was pasted.
    n_detected: faces found (or given as landmarks) before selection; ``face_indices`` number these.
    interrupted: True when ``check_interrupt`` stopped the run early; ``faces`` then holds only the faces done
    (all of them pasted) and n_faces < n_selected.
    n_selected: how many faces were selected (of n_detected), done or not.
    """
    image: np.ndarray
    faces: list[RestoredFace]
    mask: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    mask_kind: str = "none"
    n_detected: int = 0
    interrupted: bool = False
    n_selected: int = 0

    @property
    def n_faces(self) -> int:
        return len(self.faces)


def _colour_channels(image: np.ndarray) -> np.ndarray:
    """(H, W, 1|3) view of the image's gray or RGB channels; ImageError for unsupported layouts."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"image must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ImageError(f"image must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), got shape {image.shape}")
    return image[..., :3] if image.shape[2] == 4 else image


def _to_rgb8(colour: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB for detectors and networks, from (H, W, 1|3) uint8/uint16."""
    if colour.dtype == np.uint16:
        colour = np.rint(colour / 257.0).astype(np.uint8)
    return np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else np.ascontiguousarray(colour)


def _aligned_crop(colour: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) float32 RGB crop in 8-bit units, cut at the image's own precision."""
    crop = warp_to_crop(colour, matrix, size)
    if crop.ndim == 2:
        crop = crop[..., None]
    crop = crop.astype(np.float32) / (257.0 if colour.dtype == np.uint16 else 1.0)
    return np.repeat(crop, 3, axis=2) if crop.shape[2] == 1 else crop


def _find_faces(colour, landmarks, detector, search_dirs, device, selection) -> tuple[list[tuple[int, Face]], int]:
    """The selected faces, each with its position among all faces found, and how many were found."""
    if landmarks is None:
        from .detection import detect_faces
        # The caller's thresholds reach the detector too: its own defaults would otherwise filter first.
        options = {"score_threshold": selection["score_threshold"], "min_face_size": selection["min_size"]}
        faces = detect_faces(_to_rgb8(colour), detector, device=device, search_dirs=tuple(search_dirs), **options)
    else:
        points = np.asarray(landmarks, np.float32)
        points = points[None] if points.ndim == 2 else points
        if points.ndim != 3 or points.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (N, 5, 2) (x, y) image px, got shape {points.shape}")
        faces = [Face(box=estimate_face_box(p), score=1.0, landmarks=p) for p in points]
    position = {id(face): i for i, face in enumerate(faces)}
    return [(position[id(face)], face) for face in select_faces(faces, colour.shape, **selection)], len(faces)


def restore_faces(
    image: np.ndarray,
    model,
    *,
    landmarks: np.ndarray | None = None,
    detector: str = "auto",
    select: str = "all",
    face_indices: Sequence[int] | None = None,
    min_face_size: float = 0,
    max_faces: int | None = None,
    score_threshold: float | None = None,
    alpha: float = 1.0,
    mask: str = "auto",
    color_correction: bool = False,
    batch_size: int = 4,
    keep_crops: bool = True,
    search_dirs: Sequence = (),
    device=None,
    on_progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], bool | None] | None = None,
    on_oom: Callable[[], None] | None = None,
    device_path: bool | None = None,
    upscaler=None,
    upscale_tile: int | None = None,
    on_upscale_progress: Callable[[int, int], None] | None = None,
) -> RestoreResult:
    """Restore every selected face of ``image`` with a GPEN ``model`` and paste them back.

    image: uint8 or uint16; (H, W) or (H, W, 1) gray, (H, W, 3) RGB or (H, W, 4) RGBA (alpha untouched).
    model: a GPENModel, or anything with ``size`` (S) and ``restore_crops((B,S,S,3) uint8 RGB) -> same``.
    A GPENModel whose network runs a batch in one forward (GPUs, see network.batches_faces) gets the whole
    batch per call; other models get one face per call.
    landmarks: (N, 5, 2) float (x, y) image px, skipping detection (eyes, nose, mouth corners,
    image-left first); boxes are then estimated from them. detector, select, face_indices, min_face_size,
    max_faces, score_threshold: detection and selection (gpen_core.detection / gpen_core.faces); selection
    applies to given landmarks too. alpha in [0, 1]: 1 = fully
    restored, 0 = input unchanged. mask: "auto" (face parsing if its weights are found, else GPEN's soft
    rectangle), "parsing" or "rectangle". color_correction: match each restored face's CIELAB mean/std to
    the input face. batch_size: faces per network call; halved down to 1 on out-of-memory, after calling
    on_oom(). on_progress(done, total) after each face, ``done`` counting up to ``total`` faces selected.
    check_interrupt() before each face: raising abandons the call (the exception propagates, as ComfyUI's Cancel
    wants); returning True stops early and keeps the faces done so far pasted (``result.interrupted`` is True).
    keep_crops: keep each face's aligned and restored (S, S, 3) uint8 RGB crops in the result (False saves
    memory on photos with many faces). search_dirs: extra folders for RetinaFace / parsing weights (a host's
    model folders). device: where detection and parsing run (default: the model's device; the network
    always runs on the model's own device). device_path: cut crops, make masks and paste on the model's
    device in torch (gpen_core.device_path), so the image crosses to the device once; None = when the model
    is a GPENModel on a GPU and no upscaler is given (on the CPU the OpenCV path is faster). On a GPU the stage
    timings are those of their kernel launches (the device runs asynchronously); total is exact.
    upscaler: a spandrel ImageModelDescriptor (gpen_core.upscale.load_upscaler, or a host's upscale model) to
    upscale the whole image first, as the official ``--use_sr``: faces are found on the input (landmarks, given
    or detected, are in input px), then cut from the input resized bilinearly and pasted onto the upscaled image.
    upscale_tile: its tile side in input px (None: automatic); on_upscale_progress(done, total) after each tile;
    check_interrupt() runs before each tile too, where only raising stops (a True stops at the first face).
    Returns a RestoreResult: the image (same layout and dtype as the input; scale times larger with an
    upscaler), per face its box, score, landmarks (in output px) and crops, the float32 paste mask in [0, 1]
    at the output size, and timings in seconds.
    No face found: the image comes back unchanged (a copy; upscaled with an upscaler) with 0 faces. A colorization,
    inpainting or seg2face model (by its official file name) raises TaskError: those work on aligned crops
    (process_aligned).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    require_restoration(getattr(model, "path", None))
    start = time.perf_counter()
    timings = dict.fromkeys(("detect", "align", "network", "mask", "paste"), 0.0)
    colour = np.ascontiguousarray(_colour_channels(image))  # once: RGBA's colour view is strided
    size = int(model.size)
    device = device if device is not None else getattr(model, "device", None)

    found, n_detected = _find_faces(colour, landmarks, detector, search_dirs, device, dict(
        mode=select, indices=face_indices, min_size=min_face_size, max_faces=max_faces,
        score_threshold=score_threshold))
    timings["detect"] = time.perf_counter() - start
    # The image faces are pasted onto, its colour channels, and the colour channels faces are cut from.
    base, base_colour, source = image, colour, colour
    if upscaler is not None:
        from .upscale import resize_plainly, scale_face, upscale_image
        t = time.perf_counter()
        base = upscale_image(image, upscaler, tile=upscale_tile, on_progress=on_upscale_progress,
                             check_interrupt=check_interrupt, on_oom=on_oom)
        base_colour = np.ascontiguousarray(_colour_channels(base))
        found = [(index, scale_face(face, upscaler.scale)) for index, face in found]
        source = resize_plainly(colour, base.shape[:2]) if found else base_colour
        timings["upscale"] = time.perf_counter() - t
    faces = [face for _, face in found]

    output = base.copy()
    out_colour = _colour_channels(output)
    tensors = hasattr(model, "restore_tensor")  # a GPENModel: tensors in and out, on its device
    if device_path is None:
        device_path = tensors and torch.device(model.device).type != "cpu" and upscaler is None
    elif device_path and (not tensors or upscaler is not None):
        raise ValueError("device_path=True needs a model with restore_tensor (a GPENModel) and no upscaler")
    frame = DeviceFrame(colour, model.device) if device_path and faces else None
    compositor = Compositor(base_colour, out_colour)
    mask_fn, mask_kind = None, "none"
    if faces and alpha > 0:
        mask_fn, mask_kind = make_mask_fn(mask, size, search_dirs=search_dirs, device=device)
        if frame is not None:
            mask_fn = device_mask_fn(mask_fn, size, model.device)
    # Faces per network call: the whole batch where the network runs it in one forward, else one face, so that
    # Cancel and the progress bar act per face.
    batched = tensors and batches_faces(model.device)
    results: list[RestoredFace] = []
    done, batch, reported, interrupted = 0, batch_size, 0, False
    while done < len(faces) and not interrupted:
        chunk = faces[done:done + batch]
        t = time.perf_counter()
        matrices = [alignment_transform(f.landmarks, size) for f in chunk]
        if frame is not None:
            aligned = frame.crops(matrices, size)
            crops = aligned.round().clamp_(0, 255)
        else:
            aligned = np.stack([_aligned_crop(source, m, size) for m in matrices])
            crops = np.clip(np.rint(aligned), 0, 255).astype(np.uint8)
        timings["align"] += time.perf_counter() - t
        pieces: list = []
        restored = None
        n_done, step = 0, len(chunk) if batched else 1
        try:
            for j in range(0, len(chunk), step):
                if check_interrupt is not None and check_interrupt():
                    interrupted = True
                    break
                if alpha > 0:
                    t = time.perf_counter()
                    piece = crops[j:j + step]
                    pieces.append(model.restore_tensor(piece) if frame is not None
                                  else np.asarray(model.restore_crops(piece)))
                    timings["network"] += time.perf_counter() - t
                n_done = min(j + step, len(chunk))
                if on_progress is not None and done + n_done > reported:  # a retried face is not counted twice
                    reported = done + n_done
                    on_progress(reported, len(faces))
            if pieces:
                restored = torch.cat(pieces) if frame is not None else np.concatenate(pieces)
                t = time.perf_counter()
                masks = mask_fn(restored)
                timings["mask"] += time.perf_counter() - t
        except _OOM_ERROR:
            if batch == 1:
                raise
            batch, interrupted = max(1, batch // 2), False
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_oom is not None:
                on_oom()
            continue
        t = time.perf_counter()
        for j in range(0 if restored is None else len(restored)):
            small = chunk[j].size < SMALL_FACE_PX
            if frame is not None:
                finished = finish_face(restored[j], aligned[j], masks[j], alpha=alpha,
                                       color_correction=color_correction, small=small)
                frame.paste(finished, masks[j], matrices[j])
                continue
            crop = restored[j].astype(np.float32)
            if color_correction:
                crop = match_colour(crop, aligned[j], masks[j])
            if small:
                crop = soften_small_face(crop)
            compositor.paste(mix(crop, aligned[j], alpha), masks[j], matrices[j])
        timings["paste"] += time.perf_counter() - t
        if frame is not None and keep_crops:  # one transfer per batch
            crops = crops.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            restored = None if restored is None else restored.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j in range(n_done):
            results.append(RestoredFace(chunk[j], crops[j] if keep_crops else None,
                                        restored[j] if keep_crops and restored is not None else None,
                                        index=found[done + j][0]))
        done += n_done
    if frame is not None:
        out_colour[...], compositor.mask = frame.result()
    timings["total"] = time.perf_counter() - start
    return RestoreResult(output, results, compositor.mask, timings, mask_kind, n_detected, interrupted,
                         len(faces))


def working_memory_bytes(size: int, dtype: torch.dtype = torch.float32, batch: int = 1) -> int:
    """Estimated peak memory in bytes that restoring faces needs beyond the weights, for crop size S = ``size``
    px with activations in ``dtype`` (a GPENModel's compute dtype) and ``batch`` faces per network call where
    the network runs them in one forward (GPUs, see network.batches_faces): 805 MB (768 MiB) per face at 512
    in fp32, half that in fp16/bf16 (only fp32 was measured). For a host that frees device memory before a run."""
    return int(size) ** 2 * _WORK_VALUES_PER_PIXEL * torch.empty((), dtype=dtype).element_size() * max(1, batch)


def release_face_models() -> None:
    """Drop the cached face detectors (MTCNN, RetinaFace) and face-parsing networks so their host or GPU
    memory can be reused; the next ``restore_faces`` reads them from disk again."""
    from .detection import get_mtcnn
    from .detection.retinaface import load_retinaface
    from .masks import _load_parser

    get_mtcnn.cache_clear()
    load_retinaface.cache_clear()
    _load_parser.cache_clear()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # hand the freed blocks back to the driver, not only to torch's allocator
